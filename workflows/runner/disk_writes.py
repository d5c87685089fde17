"""Writing a run's files: atomically (the old file or the whole new one, never a torn one),
with a full disk reported as a :class:`~pipeline.errors.DiskFullError` that names the file and
says what to do; and reading back JSON that a crash may have left torn."""

from __future__ import annotations

import contextlib
import errno
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import DiskFullError
from pipeline.file_io import write_atomic


@contextlib.contextmanager
def disk_errors(path: Path | str) -> Iterator[None]:
    """Turn ENOSPC/EDQUOT into :class:`DiskFullError` naming ``path``."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                f"No space left on the device while writing {path}. Free some space (or point "
                "--out at a bigger disk) and run the same command again: finished shards are "
                "kept."
            ) from exc
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`pipeline.file_io.write_atomic`); a full
    disk is a :class:`DiskFullError` naming ``path``."""
    with disk_errors(path):
        write_atomic(path, data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None when missing or unreadable (a torn record is no record)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
