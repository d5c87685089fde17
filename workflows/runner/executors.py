"""Executors: where shard tasks run, and how they are reported as they finish.

``InlineExecutor`` (``synchronous``) runs each task in this thread when waited for;
``PoolExecutor`` (``threads``, ``processes``) runs device tasks on two threads of this process
and CPU tasks on threads or spawned processes; ``DaskExecutor`` runs them on a Dask cluster.
They route on :attr:`workflows.runner.stage_api.Task.resources` alone: a task that asks for a
``GPU``
goes to the device pool (in-process) or to a worker that offers one (Dask).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import queue
from typing import Any, Protocol

from workflows.runner.stage_api import Task, execute

Finished = tuple[Any, dict[str, Any] | None, BaseException | None]


class Executor(Protocol):
    """Runs :class:`Task` objects somewhere and reports them as they finish."""

    name: str

    def submit(self, task: Task, priority: int) -> Any: ...
    def wait(self) -> list[Finished]: ...
    def cancel(self) -> None:
        """Drop submitted tasks that have not started (after a failure or an interrupt)."""
    def cancel_queued(self) -> None:
        """Drop tasks not started, keep running ones (a gentle stop); they are reported by
        :meth:`wait` as cancelled."""
    def in_flight(self) -> int:
        """Tasks running now."""


class InlineExecutor:
    """``synchronous``: each task runs in this thread when waited for, highest priority first."""

    name = "synchronous"

    def __init__(self) -> None:
        self._queue: list[tuple[int, int, Task]] = []
        self._seq = 0
        self._busy = False
        self._dropped: list[int] = []

    def submit(self, task: Task, priority: int) -> Any:
        self._seq += 1
        self._queue.append((priority, self._seq, task))
        return self._seq

    def wait(self) -> list[Finished]:
        if self._dropped:
            dropped, self._dropped = self._dropped, []
            return [(h, None, cf.CancelledError("dropped by a stop")) for h in dropped]
        self._queue.sort(key=lambda item: (item[0], item[1]))
        _prio, handle, task = self._queue.pop(0)
        self._busy = True
        try:
            return [(handle, execute(task), None)]
        except Exception as exc:
            return [(handle, None, exc)]
        finally:
            self._busy = False

    def cancel(self) -> None:
        self._queue.clear()

    def cancel_queued(self) -> None:
        self._dropped += [handle for _p, handle, _t in self._queue]
        self._queue.clear()

    def in_flight(self) -> int:
        return int(self._busy)


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
    takes turns on the device lock), CPU tasks on threads or on spawned processes."""

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
            # Not fork: a forked child of a process running torch threads can deadlock. A
            # fork server is a fresh process that imports the stages and torch once (no
            # torch op, no thread pool) and forks the workers from there, instead of each
            # spawned worker importing them again; spawn where there is no fork server.
            methods = multiprocessing.get_all_start_methods()
            if "forkserver" in methods:
                ctx = multiprocessing.get_context("forkserver")
                ctx.set_forkserver_preload(
                    ["workflows.stages", "torch", "pipeline.attribution.registry"])
            else:
                ctx = multiprocessing.get_context("spawn")
            self._pool = cf.ProcessPoolExecutor(self._cpus, mp_context=ctx)
        return self._pool

    def submit(self, task: Task, priority: int) -> Any:
        if "GPU" in task.resources:
            pool: cf.Executor = self._device
        elif self._processes:
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

    def cancel_queued(self) -> None:
        self.cancel()  # a future that has started cannot be cancelled: it runs to its end

    def in_flight(self) -> int:
        return sum(1 for fut in list(self._futures) if fut.running())

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

        fut = self.client.submit(execute, task, key=f"{task.unit.key}-{uuid.uuid4().hex[:8]}",
                                 pure=False, priority=-priority,
                                 resources=dict(task.resources) or None)
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

    def cancel_queued(self) -> None:
        """Dask does not say which tasks have started: every submitted one runs and is
        recorded (streaming submits only the units whose inputs are done)."""

    def in_flight(self) -> int:
        return len(self._futures)


def _drain(done: queue.SimpleQueue[Any]) -> list[Any]:
    """Block for one finished future, then take every other one already finished."""
    out = [done.get()]
    while True:
        try:
            out.append(done.get_nowait())
        except queue.Empty:
            return out
