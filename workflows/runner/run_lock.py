"""The run lock: one run at a time writes a run folder (``<run>/run.lock``), and
``xai status`` can say which run holds it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from pipeline.errors import LockError


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
