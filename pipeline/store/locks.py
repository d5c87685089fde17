"""Chunk locks: writers of one Zarr chunk take turns, across threads, processes and machines.

Zarr writes part of a chunk by reading the chunk, changing it and writing it back whole
(through a temporary file and a rename, so readers never see half a chunk). Two writers of one
chunk at once would each write back what they read, and the first one's values would be lost.
The store's small arrays (per-image scalars, curves) keep many shards and every explainer in
one chunk (:attr:`pipeline.store.schema.ArrayFamily.pooled`), and their writers are shard
tasks that run at the same time, so they take the chunk's lock around the write.

The lock is a POSIX record lock (``fcntl.lockf``) on one byte of one file beside the store,
``.<store>.lock``, the byte chosen by the chunk: a single file however many chunks, released
by the kernel when its holder dies (even by SIGKILL), and honoured over NFS. Record locks
belong to the process, not the thread, so threads of one process first take a thread lock for
the same byte; the file is opened once per process and never closed while in use (closing any
descriptor of a file drops the process's locks on it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline.errors import StoreError

#: Lock bytes: a chunk's byte is a hash of its name modulo this. Two chunks on one byte only
#: take turns needlessly.
SLOTS = 1 << 20

_guard = threading.Lock()
_threads: dict[tuple[str, int], threading.Lock] = {}
_files: dict[tuple[str, int], int] = {}


def lock_path(store_path: Path | str) -> Path:
    """The lock file of the store at ``store_path``: ``.<store>.lock`` beside it (inside the
    store, Zarr would warn about a file it does not know; hidden, so that it is not taken for
    one of the ``<store>.*`` folders a store replacement leaves)."""
    p = Path(store_path)
    return p.with_name(f".{p.name}.lock")


def chunk_byte(array_name: str, chunk: tuple[int, ...]) -> int:
    """The byte of the lock file that stands for ``chunk`` (its grid index) of the array."""
    key = f"{array_name}/{'.'.join(str(c) for c in chunk)}"
    return zlib.crc32(key.encode()) % SLOTS


def _fd(path: Path) -> int:
    key = (str(path), os.getpid())  # a forked child opens its own
    with _guard:
        fd = _files.get(key)
        if fd is None:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise StoreError(f"Expected to open the store's lock file {path}, got {exc}. "
                                 "Make its folder writable.") from exc
            _files[key] = fd
        return fd


def _thread_lock(path: Path, byte: int) -> threading.Lock:
    with _guard:
        return _threads.setdefault((str(path), byte), threading.Lock())


@contextlib.contextmanager
def chunk_lock(store_path: Path | str, array_name: str, chunks: Iterable[tuple[int, ...]]
               ) -> Iterator[None]:
    """Hold the locks of ``chunks`` (grid indices) of ``array_name`` in the store at
    ``store_path`` while the body writes them.

    Locks are taken in byte order, so two writers of overlapping chunk sets cannot deadlock.

    Raises
    ------
    StoreError
        The file system refuses record locks (a Lustre mount without ``-o flock``, say).
    """
    path = lock_path(store_path)
    fd = _fd(path)
    held: list[tuple[threading.Lock, int]] = []
    try:
        for byte in sorted({chunk_byte(array_name, c) for c in chunks}):
            tlock = _thread_lock(path, byte)
            tlock.acquire()
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX, 1, byte)
            except OSError as exc:
                tlock.release()
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise StoreError(
                        f"Expected the file system of {path} to support record locks "
                        f"(fcntl), got {exc}. Several tasks write the store's small arrays; "
                        "mount it with locking on (Lustre: -o flock; NFS: without nolock) "
                        "or put the run on a local disk.") from exc
                raise
            held.append((tlock, byte))
        yield
    finally:
        for tlock, byte in reversed(held):
            with contextlib.suppress(OSError):
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, byte)
            tlock.release()
