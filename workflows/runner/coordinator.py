"""The streaming coordinator loop: submit the units whose inputs are done, record each as its
task returns, then submit the units that were waiting for it.

A shard therefore moves to its next stage as soon as its current stage is recorded, and CPU
stages of finished shards run while the device works on the next ones. Each unit is submitted
once: no two tasks ever write one shard.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pipeline.errors import TaskFailed, XaiError
from workflows.runner.executors import Executor
from workflows.runner.stage_api import Task, Unit


class Stop:
    """A request to stop a run gently (the first Ctrl-C): tasks already running finish and
    are recorded, nothing new starts. Safe to set from a signal handler."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._in_flight: Callable[[], int] = lambda: 0

    def request(self) -> None:
        self._event.set()

    def watch(self, in_flight: Callable[[], int]) -> None:
        """Count the running tasks with ``in_flight`` (the executor's)."""
        self._in_flight = in_flight

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def in_flight(self) -> int:
        """Tasks running now (the ones a gentle stop waits for)."""
        return self._in_flight()


class RunStopped(Exception):
    """The run stopped on request after recording its running tasks; ``recorded`` counts
    the units it recorded in all."""

    def __init__(self, recorded: int) -> None:
        super().__init__(f"stopped on request after recording {recorded} units")
        self.recorded = recorded


def shard_first(unit: Unit) -> int:
    """The default priority: earlier shards first."""
    return unit.start


def run_units(pending: Sequence[Unit], depends_on: Callable[[Unit], Iterable[Unit]],
              make_task: Callable[[Unit], Task], executor: Executor,
              on_result: Callable[[Unit, dict[str, Any]], None],
              priority: Callable[[Unit], int] = shard_first, stop: Stop | None = None) -> None:
    """Run ``pending`` units in dependency order, streaming, and record each as it returns.

    ``depends_on(u)`` names the units whose output ``u`` reads; those not in ``pending`` are
    taken as done. ``priority(u)``: lower is submitted (and, on Dask, run) first. On the
    first failure nothing more is submitted or recorded, queued tasks are dropped, and the
    task's error is raised (a :class:`TaskFailed` for a worker that kept dying).

    When ``stop`` is requested, tasks not started are dropped, the running ones are waited
    for and recorded, and :class:`RunStopped` is raised.
    """
    todo = set(pending)
    waiting = {u: {d for d in depends_on(u) if d in todo and d != u} for u in pending}
    dependents: dict[Unit, list[Unit]] = defaultdict(list)
    for u, deps in waiting.items():
        for d in deps:
            dependents[d].append(u)
    running: dict[Any, Unit] = {}
    failure: tuple[Unit, BaseException] | None = None
    recorded = 0
    stopping = False
    if stop is not None:
        stop.watch(executor.in_flight)

    def stop_now() -> bool:
        """Whether a stop was requested; the first time, drop the tasks not started."""
        nonlocal stopping
        if stop is not None and stop.requested and not stopping:
            stopping = True
            executor.cancel_queued()
        return stopping

    def submit(units: Iterable[Unit]) -> None:
        for u in sorted(units, key=priority):
            if stop is not None and stop.requested:
                return
            running[executor.submit(make_task(u), priority(u))] = u

    try:
        submit(u for u in pending if not waiting[u])
        while running and failure is None:
            stop_now()
            for handle, result, exc in executor.wait():
                unit = running.pop(handle)
                if exc is not None:
                    if not (stopping and _cancelled(exc)):
                        failure = failure or (unit, exc)
                    continue
                assert result is not None
                on_result(unit, result)
                recorded += 1
                if failure is None and not stop_now():
                    ready = []
                    for d in dependents[unit]:
                        waiting[d].discard(unit)
                        if not waiting[d]:
                            ready.append(d)
                    submit(ready)
    finally:
        if running:
            # Queued tasks are dropped; in-process ones already running finish when the
            # executor shuts down, unrecorded (they are recomputed on the next run).
            executor.cancel()
    if failure is None and stop is not None and stop.requested:
        raise RunStopped(recorded)
    if failure is not None:
        unit, exc = failure
        if isinstance(exc, XaiError):
            raise exc
        if type(exc).__name__ == "KilledWorker":
            raise TaskFailed(
                f"{unit.key}: the workers running it died repeatedly ({exc}). Look at the "
                "worker logs (out of memory?), then run the same command again: finished "
                "shards are kept.") from exc
        raise exc


def _cancelled(exc: BaseException) -> bool:
    """A task dropped before it started (by a gentle stop), not one that failed."""
    import asyncio
    import concurrent.futures as cf

    return isinstance(exc, cf.CancelledError | asyncio.CancelledError)
