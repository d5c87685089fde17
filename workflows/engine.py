"""The streaming coordinator loop: submit the units whose inputs are done, record each as its
task returns, then submit the units that were waiting for it.

A shard therefore moves to its next stage as soon as its current stage is recorded, and CPU
stages of finished shards run while the device works on the next ones. Each unit is submitted
once: no two tasks ever write one shard.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pipeline.errors import XaiError
from workflows.executors import Executor
from workflows.plugin import Task, Unit


class TaskFailed(XaiError):
    """A shard task raised; the message names the unit and the worker's error."""


def shard_first(unit: Unit) -> int:
    """The default priority: earlier shards first."""
    return unit.start


def run_units(pending: Sequence[Unit], depends_on: Callable[[Unit], Iterable[Unit]],
              make_task: Callable[[Unit], Task], executor: Executor,
              on_result: Callable[[Unit, dict[str, Any]], None],
              priority: Callable[[Unit], int] = shard_first) -> None:
    """Run ``pending`` units in dependency order, streaming, and record each as it returns.

    ``depends_on(u)`` names the units whose output ``u`` reads; those not in ``pending`` are
    taken as done. ``priority(u)``: lower is submitted (and, on Dask, run) first. On the
    first failure nothing more is submitted or recorded, queued tasks are dropped, and the
    task's error is raised (a :class:`TaskFailed` for a worker that kept dying).
    """
    todo = set(pending)
    waiting = {u: {d for d in depends_on(u) if d in todo and d != u} for u in pending}
    dependents: dict[Unit, list[Unit]] = defaultdict(list)
    for u, deps in waiting.items():
        for d in deps:
            dependents[d].append(u)
    running: dict[Any, Unit] = {}
    failure: tuple[Unit, BaseException] | None = None

    def submit(units: Iterable[Unit]) -> None:
        for u in sorted(units, key=priority):
            running[executor.submit(make_task(u), priority(u))] = u

    try:
        submit(u for u in pending if not waiting[u])
        while running and failure is None:
            for handle, result, exc in executor.wait():
                unit = running.pop(handle)
                if exc is not None:
                    failure = failure or (unit, exc)
                    continue
                assert result is not None
                on_result(unit, result)
                if failure is None:
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
