"""Atomic file writes: a temporary file in the same folder, fsynced, then renamed into place,
so a reader (or a resumed run) sees the old file or the whole new one, never a torn one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, data: bytes,
                 before_rename: Callable[[], None] | None = None) -> None:
    """Write ``data`` to ``path`` via ``.<stem>.XXXX<suffix>.tmp`` beside it and ``os.replace``.

    The file is made 0644 (``mkstemp`` makes 0600; results are meant to be shared).
    ``before_rename`` runs between the fsync and the rename (crash tests die there); on any
    exception the temporary file is removed and the exception re-raised.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f"{path.suffix}.tmp",
                               dir=path.parent)
    os.chmod(tmp, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
