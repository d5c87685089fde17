"""Executors and the streaming coordinator loop.

The coordinator submits every pending unit whose inputs are done, records each unit as its
task returns, and then submits the units that were waiting for it. A shard therefore moves to
its next stage as soon as its current stage is recorded, and CPU stages of finished shards run
while the device works on the next ones. Each unit is submitted once: no two tasks ever write
one shard.

Executors run tasks in-process (``synchronous``: one at a time, in this thread; ``threads``
and ``processes``: a device thread pool plus CPU threads or processes) or on a Dask cluster
(device tasks need the ``GPU`` resource).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import queue
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from pipeline.errors import XaiError
from workflows.registry import STAGES, Unit
from workflows.stages import Task, execute

#: Share of a worker's ``GPU`` resource one device task takes: two device tasks may be on a
#: worker at once, so one reads or writes its shard while the other computes (a per-device
#: lock in the worker keeps the compute one at a time).
DEVICE_SHARE = 0.5


class TaskFailed(XaiError):
    """A shard task raised; the message names the unit and the worker's error."""


Finished = tuple[Any, dict[str, Any] | None, BaseException | None]


class Executor(Protocol):
    """Runs :class:`Task` objects somewhere and reports them as they finish."""

    name: str

    def submit(self, task: Task, priority: int) -> Any: ...
    def wait(self) -> list[Finished]: ...
    def cancel(self) -> None:
        """Drop submitted tasks that have not started (after a failure or an interrupt)."""


class InlineExecutor:
    """``synchronous``: each task runs in this thread when waited for, highest priority first."""

    name = "synchronous"

    def __init__(self) -> None:
        self._queue: list[tuple[int, int, Task]] = []
        self._seq = 0

    def submit(self, task: Task, priority: int) -> Any:
        self._seq += 1
        self._queue.append((priority, self._seq, task))
        return self._seq

    def wait(self) -> list[Finished]:
        self._queue.sort(key=lambda item: (item[0], item[1]))
        _prio, handle, task = self._queue.pop(0)
        try:
            return [(handle, execute(task), None)]
        except Exception as exc:
            return [(handle, None, exc)]

    def cancel(self) -> None:
        self._queue.clear()


class _Tracked:
    """Futures in flight, and a queue their done-callbacks fill: waiting is O(1) per unit,
    not a scan of every pending future."""

    def __init__(self) -> None:
        self._futures: set[Any] = set()
        self._done: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def _track(self, fut: Any) -> Any:
        self._futures.add(fut)
        fut.add_done_callback(self._done.put)
        return fut

    def _outcome(self, fut: Any) -> Finished:
        raise NotImplementedError

    def wait(self) -> list[Finished]:
        out = []
        for fut in _drain(self._done):
            self._futures.discard(fut)
            out.append(self._outcome(fut))
        return out


class PoolExecutor(_Tracked):
    """``threads`` / ``processes``: device tasks on two threads of this process (their compute
    takes turns on the device lock), CPU tasks on threads or on spawned processes. Stages that
    need their own process (matplotlib) always get processes."""

    def __init__(self, processes: bool, cpu_workers: int | None = None) -> None:
        super().__init__()
        self.name = "processes" if processes else "threads"
        self._processes = processes
        self._cpus = cpu_workers or os.cpu_count() or 1
        self._device = cf.ThreadPoolExecutor(2, thread_name_prefix="xai-device")
        self._threads = cf.ThreadPoolExecutor(self._cpus, thread_name_prefix="xai-cpu")
        self._pool: cf.ProcessPoolExecutor | None = None

    def _process_pool(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            # spawn: a forked child of a process running torch threads can deadlock.
            self._pool = cf.ProcessPoolExecutor(self._cpus,
                                                mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def submit(self, task: Task, priority: int) -> Any:
        stage = STAGES[task.unit.stage]
        if stage.device:
            pool: cf.Executor = self._device
        elif stage.own_process or self._processes:
            pool = self._process_pool()
        else:
            pool = self._threads
        return self._track(pool.submit(execute, task))

    def _outcome(self, fut: Any) -> Finished:
        if fut.cancelled():
            return fut, None, cf.CancelledError(f"{fut} cancelled")
        exc = fut.exception()
        return fut, None if exc else fut.result(), exc

    def cancel(self) -> None:
        for fut in self._futures:
            fut.cancel()

    def shutdown(self) -> None:
        """Wait for running tasks (no writer outlives the run), drop queued ones."""
        self._device.shutdown(wait=True, cancel_futures=True)
        self._threads.shutdown(wait=True, cancel_futures=True)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor(_Tracked):
    """A Dask cluster: device tasks only on workers with the ``GPU`` resource; a task whose
    worker dies is rescheduled on another one by the Dask scheduler."""

    def __init__(self, client: Any, name: str) -> None:
        super().__init__()
        self.client = client
        self.name = name

    def submit(self, task: Task, priority: int) -> Any:
        import uuid

        stage = STAGES[task.unit.stage]
        resources = {"GPU": DEVICE_SHARE} if stage.device else None
        fut = self.client.submit(execute, task, key=f"{task.unit.key}-{uuid.uuid4().hex[:8]}",
                                 pure=False, priority=-priority, resources=resources)
        return self._track(fut)

    def _outcome(self, fut: Any) -> Finished:
        # result(), not a look at fut.status: the callback fires on a state change, and a
        # result held by a worker that died since is "lost" and recomputed by the scheduler
        # (the status goes finished -> pending -> finished); result() waits for that.
        import asyncio

        try:
            return fut, fut.result(), None
        except (Exception, asyncio.CancelledError) as err:  # task error, KilledWorker, cancel
            return fut, None, err

    def cancel(self) -> None:
        if self._futures:
            self.client.cancel(list(self._futures))
            self._futures.clear()


def _drain(done: queue.SimpleQueue[Any]) -> list[Any]:
    """Block for one finished future, then take every other one already finished."""
    out = [done.get()]
    while True:
        try:
            out.append(done.get_nowait())
        except queue.Empty:
            return out


def priority(unit: Unit, method_order: Sequence[str]) -> int:
    """Lower runs first: shard by shard, earlier stages first within a shard."""
    stage_index = list(STAGES).index(unit.stage)
    method_index = method_order.index(unit.method) if unit.method in method_order else 0
    return (unit.start * 16 + stage_index) * 64 + method_index


def run_units(pending: Sequence[Unit], depends_on: Callable[[Unit], Iterable[Unit]],
              make_task: Callable[[Unit], Task], executor: Executor,
              on_result: Callable[[Unit, dict[str, Any]], None],
              method_order: Sequence[str] = ()) -> None:
    """Run ``pending`` units in dependency order, streaming, and record each as it returns.

    ``depends_on(u)`` names the units whose output ``u`` reads; those not in ``pending`` are
    taken as done. On the first failure nothing more is submitted or recorded, queued tasks
    are dropped, and the task's error is raised (a :class:`TaskFailed` for a worker that kept
    dying).
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
        for u in sorted(units, key=lambda x: priority(x, method_order)):
            running[executor.submit(make_task(u), priority(u, method_order))] = u

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
