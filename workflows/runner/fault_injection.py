"""Fault injection for crash tests: ``XAI_FAULT=<stage>:<point>[:<n>]`` SIGKILLs the process.

Points: ``before-write`` (computed, nothing written), ``mid-write`` (some of the shard's arrays
written), ``after-write`` (data written, no record yet), ``after-record``. ``n`` (default 1)
picks the n-th time the point is reached (in each process). With ``XAI_FAULT_ONCE=<file>``
the fault fires only in the process that first creates that file, so a worker restarted by
Dask (with the same environment) does not die again. Unset in normal use: one dictionary
lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_seen: Counter[str] = Counter()


def point(name: str) -> None:
    """Die here, as with SIGKILL, if ``XAI_FAULT`` names this point."""
    spec = os.environ.get("XAI_FAULT")
    if not spec:
        return
    target, _, nth = spec.rpartition(":") if spec.count(":") >= 2 else (spec, "", "1")
    if target != name:
        return
    _seen[name] += 1
    if _seen[name] == int(nth or 1) and _first(os.environ.get("XAI_FAULT_ONCE")):
        os.kill(os.getpid(), signal.SIGKILL)


def _first(marker: str | None) -> bool:
    """True without a marker file; else True only for the caller that creates it."""
    if not marker:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def delay(stage: str) -> None:
    """Sleep ``XAI_SLOW_SHARD_S`` seconds per shard of ``stage`` (widens the window in which
    tests interrupt a run); unset in normal use."""
    seconds = os.environ.get("XAI_SLOW_SHARD_S")
    if seconds and stage == os.environ.get("XAI_SLOW_STAGE", "attribute"):
        import time

        log = os.environ.get("XAI_SLOW_LOG")
        if log:  # one line per slowed task, as it starts: a test waits for one in flight
            fd = os.open(log, os.O_CREAT | os.O_APPEND | os.O_WRONLY)
            try:
                os.write(fd, f"{stage}\n".encode())
            finally:
                os.close(fd)
        time.sleep(float(seconds))
