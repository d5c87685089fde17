"""Resume state: atomic completion records and the run lock.

A shard is done when its record exists *and* carries the current hash of the config values
its stage depends on; records are written after the data, via temp file + ``os.replace``, so
a crash leaves either no record or a whole one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import DiskFullError, LockError
from pipeline.files import write_atomic


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
    """Write ``data`` to ``path`` atomically (:func:`pipeline.files.write_atomic`); a full
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


class Records:
    """Completion records under ``<run>/state/<stage>[/<method>]/<shard>.json``.

    Keys are :attr:`workflows.plugin.Unit.key` strings. Only the coordinator writes them,
    after the unit's data is stored.
    """

    def __init__(self, run_dir: Path) -> None:
        self.root = Path(run_dir) / "state"

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        rec = read_json(self.path(key))
        return rec if isinstance(rec, dict) else None

    def is_done(self, key: str, digest: str) -> bool:
        rec = self.get(key)
        return rec is not None and rec.get("hash") == digest

    def mark_done(self, key: str, digest: str, **info: Any) -> None:
        atomic_write_json(self.path(key), {"unit": key, "hash": digest,
                                           "finished": time.time(), **info})

    def in_folder(self, folder: str) -> list[Path]:
        """The records directly in ``state/<folder>`` (one stage, or one stage and method)."""
        path = self.root / folder
        return sorted(path.glob("*.json")) if path.is_dir() else []

    def clear(self, folder: str) -> int:
        """Remove every record under ``state/<folder>`` (a stage, or ``stage/method``)."""
        path = self.root / folder
        count = len(list(path.rglob("*.json"))) if path.is_dir() else 0
        shutil.rmtree(path, ignore_errors=True)
        return count


class RunLock:
    """An exclusive lock on a run directory.

    Uses ``flock`` on ``<run>/run.lock``: the kernel drops it when the holder dies, even by
    SIGKILL, so a lock left by a killed run never blocks the next one. The file names the
    holder (pid, host, start time) for the refusal message.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / "run.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            os.close(fd)
            raise LockError(
                f"Another run is using {self.path.parent} ({holder or 'holder unknown'}). "
                "Wait for it to finish, or stop it; two runs must not write one store."
            ) from None
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        self._fd = fd

    def holder(self) -> dict[str, str] | None:
        """Who holds the lock now (``pid``, ``host``, ``started``), or None when nobody
        does. Only looks: never takes the lock from a running run."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
                try:
                    info = json.loads(text)
                except ValueError:
                    info = {}
                return {k: str(info.get(k, "?")) for k in ("pid", "host", "started")}
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
