"""Completion records: which units are done, and under which settings.

A shard is done when its record exists *and* carries the current hash of the config values
its stage depends on. Records are written after the data, as whole fsynced lines of one
append-only log per stage (and method), so a crash leaves either no record or a whole one,
and a run of 50,000 images keeps a few dozen record files, not tens of thousands.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workflows.runner.disk_writes import atomic_write_bytes, disk_errors, read_json

#: What a dropped record's log line says (the key alone, no hash: never done).
_DROPPED = "dropped"

#: Appends to one log from several threads of the coordinator are serialised per file.
_APPEND_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def _append_lock(path: Path) -> threading.Lock:
    with _LOCKS_LOCK:
        return _APPEND_LOCKS.setdefault(path, threading.Lock())


@dataclass
class _Log:
    """What was read of one folder's log: its file's identity, how far it was read, and the
    newest record per key (a dropped key maps to None)."""

    path: str = ""
    inode: int = -1
    #: Bytes taken (up to the last complete line), and the file's size when last read.
    offset: int = 0
    size: int = -1
    lines: int = 0
    entries: dict[str, dict[str, Any] | None] = field(default_factory=dict)


class Records:
    """Completion records: one append-only log per stage (and method),
    ``<run>/state/<stage>[/<method>].jsonl``, one JSON line per finished unit.

    Keys are :attr:`workflows.runner.stage_api.Unit.key` strings (``stage[/method]/NNNNNN``);
    a key's folder is all but its last part. Only the coordinator writes, after the unit's data is
    stored. A line is appended with one ``write`` and fsynced before the unit counts as done,
    so a crash leaves whole lines and at most a torn last one, which readers skip (a torn
    record is no record) and the next append starts after. Readers in other processes
    (``xai status``) read only complete lines, and only what was appended since their last
    read. The newest line per key wins; dropping a key appends a line that says so, and a
    log that has grown past twice its live records is rewritten atomically.

    Records of runs made before the logs (``state/<key>.json``, one file each) are read as
    well, and dropped or cleared the same way: an old run resumes without recomputing.
    """

    def __init__(self, run_dir: Path) -> None:
        self.root = Path(run_dir) / "state"
        self._logs: dict[str, _Log] = {}
        self._lock = threading.RLock()  # one reader at a time moves a log's offset

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"].parent)  # type: ignore[misc]

    # ------------------------------------------------------------------ where

    @staticmethod
    def folder_of(key: str) -> str:
        """The folder (``stage`` or ``stage/method``) whose log holds ``key``."""
        return key.rsplit("/", 1)[0]

    def log_path(self, folder: str) -> Path:
        """The log of ``folder`` (``state/<folder>.jsonl``)."""
        return self.root / f"{folder}.jsonl"

    def path(self, key: str) -> Path:
        """The file the record of ``key`` is written to (its folder's log)."""
        return self.log_path(self.folder_of(key))

    def _legacy(self, key: str) -> Path:
        return self.root / f"{key}.json"

    # ------------------------------------------------------------------ reading

    def _read(self, folder: str) -> _Log:
        """The folder's log, brought up to date: new complete lines only, unless the file
        was replaced (rewritten, or cleared) since the last read."""
        with self._lock:
            return self._read_locked(folder)

    def _read_locked(self, folder: str) -> _Log:
        log = self._logs.get(folder)
        if log is None:
            log = self._logs[folder] = _Log(path=str(self.log_path(folder)))
        try:
            st = os.stat(log.path)  # one call when nothing changed: status asks per unit
        except FileNotFoundError:
            if log.inode != -1:
                self._logs[folder] = log = _Log(path=log.path)
            return log
        if st.st_ino == log.inode and st.st_size == log.size:
            return log
        if st.st_ino != log.inode or st.st_size < log.offset:
            log = self._logs[folder] = _Log(path=log.path)
        try:
            fd = os.open(log.path, os.O_RDONLY)
        except FileNotFoundError:
            return log
        try:
            st = os.fstat(fd)  # the file read (a rewrite may have replaced it meanwhile)
            if st.st_ino != log.inode:
                log = self._logs[folder] = _Log(path=log.path, inode=st.st_ino)
            data = os.pread(fd, max(0, st.st_size - log.offset), log.offset)
            end = data.rfind(b"\n") + 1  # an unfinished last line waits for its end
            for line in data[:end].splitlines():
                self._take(log, line)
            log.offset += end
            log.size = log.offset + len(data) - end
        finally:
            os.close(fd)
        return log

    @staticmethod
    def _take(log: _Log, line: bytes) -> None:
        try:
            rec = json.loads(line)
        except ValueError:
            return  # a line torn by a crash (or a full disk): no record
        if not isinstance(rec, dict) or not isinstance(rec.get("unit"), str):
            return
        log.lines += 1
        log.entries[rec["unit"]] = None if rec.get(_DROPPED) else rec

    def get(self, key: str) -> dict[str, Any] | None:
        """The record of ``key``, or None when it has none (never made, dropped, torn)."""
        log = self._read(self.folder_of(key))
        if key in log.entries:
            return log.entries[key]
        rec = read_json(self._legacy(key))
        return rec if isinstance(rec, dict) else None

    def is_done(self, key: str, digest: str) -> bool:
        rec = self.get(key)
        return rec is not None and rec.get("hash") == digest

    def entries(self, folder: str) -> dict[str, dict[str, Any]]:
        """Every live record of ``folder`` (a stage, or a stage and method), by key, in key
        order: those in its log and those of an older run's files."""
        log = self._read(folder)
        out: dict[str, dict[str, Any]] = {}
        legacy = self.root / folder
        if legacy.is_dir():
            for p in legacy.glob("*.json"):
                key = f"{folder}/{p.stem}"
                if key not in log.entries and isinstance(rec := read_json(p), dict):
                    out[key] = rec
        out.update({k: v for k, v in log.entries.items() if v is not None})
        return dict(sorted(out.items()))

    def folders(self, folder: str) -> list[str]:
        """``folder`` and the folders under it that hold records (a stage's methods: their
        logs, and an older run's record folders)."""
        out = {folder}
        sub = self.root / folder
        if sub.is_dir():
            out |= {f"{folder}/{p.name.removesuffix('.jsonl')}" for p in sub.iterdir()
                    if p.is_dir() or p.suffix == ".jsonl"}
        return sorted(out)

    def in_folder(self, folder: str) -> list[str]:
        """The keys recorded directly in ``folder`` (one stage, or one stage and method)."""
        return list(self.entries(folder))

    # ------------------------------------------------------------------ writing

    def _append(self, folder: str, lines: list[dict[str, Any]]) -> None:
        """Append ``lines`` to the folder's log in one write, fsynced; a full disk is a
        :class:`DiskFullError` naming the log."""
        path = self.log_path(folder)
        data = b"".join(json.dumps(r, sort_keys=True, default=str).encode() + b"\n"
                        for r in lines)
        with _append_lock(path), disk_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data  # after a torn line: start a line of our own
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        self._compact(folder)

    def _compact(self, folder: str) -> None:
        """Rewrite the log with its live records alone once it holds more than twice as
        many lines (reruns, drops), atomically: readers see the old log or the new one."""
        path = self.log_path(folder)
        with _append_lock(path):
            log = self._read(folder)
            live = [r for r in log.entries.values() if r is not None]
            if log.lines <= 2 * len(live) + 64:
                return
            atomic_write_bytes(path, b"".join(
                json.dumps(r, sort_keys=True, default=str).encode() + b"\n" for r in live))

    def mark_done(self, key: str, digest: str, **info: Any) -> None:
        """Record ``key`` as done under the config hash ``digest``."""
        self.put(key, {"unit": key, "hash": digest, "finished": time.time(), **info})

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Write ``record`` (as :meth:`get` returned it) as the record of ``key``."""
        self._append(self.folder_of(key), [{**record, "unit": key}])

    def put_all(self, records: dict[str, dict[str, Any]]) -> None:
        """:meth:`put` for many keys, one write per folder."""
        by_folder: dict[str, list[dict[str, Any]]] = {}
        for key, rec in records.items():
            by_folder.setdefault(self.folder_of(key), []).append({**rec, "unit": key})
        for folder, lines in by_folder.items():
            self._append(folder, lines)

    def drop(self, *keys: str) -> None:
        """Forget the records of ``keys`` (their units count as not done)."""
        by_folder: dict[str, list[str]] = {}
        for key in keys:
            by_folder.setdefault(self.folder_of(key), []).append(key)
        for folder, mine in by_folder.items():
            self._append(folder, [{"unit": k, _DROPPED: True} for k in mine])
            for k in mine:
                self._legacy(k).unlink(missing_ok=True)

    def clear(self, folder: str) -> int:
        """Remove every record under ``state/<folder>`` (a stage, or ``stage/method``, with
        the methods' logs of a stage); the count removed."""
        count = sum(len(self.entries(f)) for f in self.folders(folder))
        shutil.rmtree(self.root / folder, ignore_errors=True)
        self.log_path(folder).unlink(missing_ok=True)
        with self._lock:
            self._logs = {f: log for f, log in self._logs.items()
                          if f != folder and not f.startswith(folder + "/")}
        return count
