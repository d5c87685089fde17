"""Files on disk: atomic writes and copies, and a file's SHA-256.

An atomic write goes to a temporary file in the same folder, fsynced, then renamed into
place, so a reader (or a resumed run) sees the old file or the whole new one, never a torn
one."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, data: bytes,
                 before_rename: Callable[[], None] | None = None, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` via ``.<stem>.XXXX<suffix>.tmp`` beside it and ``os.replace``.

    The file is made 0644 (``mkstemp`` makes 0600; results are meant to be shared).
    ``before_rename`` runs between the fsync and the rename (crash tests die there); on any
    exception the temporary file is removed and the exception re-raised. ``fsync=False``
    skips the flush to disk, for files a crash may lose as long as they are never torn
    (the report's thousands of tiles: their shard is recorded only after all of them).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f"{path.suffix}.tmp",
                               dir=path.parent)
    os.chmod(tmp, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def copy_atomic(src: Path, path: Path) -> None:
    """Copy the file ``src`` to ``path`` the same way (temporary file, fsync, rename), without
    holding it in memory: a crash leaves no file or the whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f"{path.suffix}.tmp",
                               dir=path.parent)
    os.chmod(tmp, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh, open(src, "rb") as source:
            shutil.copyfileobj(source, fh, 1 << 20)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (a local weight file's identity, a dataset's fingerprint)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
