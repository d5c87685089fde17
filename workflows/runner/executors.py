"""Where shard tasks run: ``--scheduler`` parsed into an executor for the run's duration, and
the executors, which run tasks and report them as they finish.

- ``synchronous``: :class:`InlineExecutor`, one task at a time in this thread when waited for
  (debugging, crash tests).
- ``threads`` (default) / ``processes``: :class:`PoolExecutor`, this process's device for the
  device stages (two threads), with CPU stages on threads or spawned processes alongside.
- ``local:N``: a ``distributed.LocalCluster`` of N worker processes; each is a device slot
  (the CPU, or one GPU each when GPUs are visible) and declares ``GPU=1``.
- ``local-cuda``: ``dask_cuda.LocalCUDACluster``, one worker per visible GPU (``uv sync
  --extra cuda``).
- ``tcp://host:port``: an existing Dask scheduler. Device stages run only on workers started
  with ``--resources "GPU=1"``; CPU stages on any worker. Every worker must see the run folder.

The Dask ones are a :class:`DaskExecutor`. Executors route on
:attr:`workflows.runner.stage_api.Task.resources` alone: a task that asks for a ``GPU`` goes
to the device pool (in-process) or to a worker that offers one (Dask).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import queue
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from pipeline.errors import ConfigError, SchedulerError
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
                    ["workflows.stages", "torch", "pipeline.attribution.method_registry"])
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


# ------------------------------------------------------------------ --scheduler

LOCAL = ("threads", "processes", "synchronous")
REMOTE = ("tcp://", "tls://", "ucx://")
#: How long to wait for a ``tcp://`` scheduler to answer.
CONNECT_TIMEOUT_S = 10
HOW_TO_START_GPU_WORKER = 'dask worker tcp://HOST:8786 --nthreads 2 --resources "GPU=1"'


def validate(spec: str) -> str:
    """Check a ``--scheduler`` value; return it unchanged."""
    if spec in LOCAL or spec == "local-cuda" or spec.startswith(REMOTE):
        return spec
    head, _, n = spec.partition(":")
    if head == "local" and n.isdigit() and int(n) >= 1:
        return spec
    raise ConfigError(
        "Expected --scheduler threads, processes, synchronous, local:N, local-cuda or "
        f"tcp://host:port, got {spec!r}."
    )


@contextlib.contextmanager
def open_executor(spec: str, run_dir: Path, device: str = "cpu") -> Iterator[Executor]:
    """Start (or connect to) what ``spec`` names, check its workers, and yield an executor.

    Raises
    ------
    SchedulerError
        An unreachable address, no worker with a ``GPU`` resource, a missing ``dask-cuda``,
        or workers that cannot see ``run_dir``: all before any work.
    """
    validate(spec)
    if spec == "synchronous":
        yield InlineExecutor()
        return
    if spec in ("threads", "processes"):
        pool = PoolExecutor(processes=spec == "processes")
        try:
            yield pool
        finally:
            pool.shutdown()
        return
    with _client(spec) as client:
        _check_device_workers(client, spec, device)
        _probe_run_folder(client, spec, run_dir)
        yield DaskExecutor(client, spec)


@contextlib.contextmanager
def _client(spec: str) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    if spec.startswith("local:"):
        n = int(spec.split(":", 1)[1])
        threads = max(1, (os.cpu_count() or 1) // n)
        with LocalCluster(n_workers=n, threads_per_worker=2, processes=True,
                          resources={"GPU": 1}, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            client.register_plugin(_device_slot_plugin(threads))
            yield client
        return
    if spec == "local-cuda":
        with _cuda_cluster() as cluster, Client(cluster) as client:
            yield client
        return
    try:
        _reachable(spec)
        client = Client(spec, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError) as exc:
        raise SchedulerError(
            f"Cannot reach the Dask scheduler at {spec} within {CONNECT_TIMEOUT_S} s ({exc}). "
            "Check the address and that `dask scheduler` is running there."
        ) from None
    with client:
        yield client


def _reachable(spec: str) -> None:
    """A TCP connection to a ``tcp://host:port`` scheduler, made and closed: a refused one
    fails at once (Dask's own client keeps retrying until its timeout). Other protocols are
    left to Dask."""
    if not spec.startswith("tcp://"):
        return
    host, _, port = spec.removeprefix("tcp://").rpartition(":")
    if not port.isdigit():
        return
    with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
        pass


def _device_slot_plugin(threads: int) -> Any:
    """A worker plugin for ``local:N``: worker ``i`` uses GPU ``i`` (mod the GPU count), and
    torch gets ``threads`` intra-op threads so that the N workers share the cores."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class DeviceSlot(WorkerPlugin):
        name = "xai-device-slot"

        def setup(self, worker: Any) -> None:
            import torch

            from workflows.runner.worker import set_gpu_slot

            name = str(worker.name)
            set_gpu_slot(int(name) if name.isdigit() else None)
            torch.set_num_threads(threads)

    return DeviceSlot()


@contextlib.contextmanager
def _cuda_cluster() -> Iterator[Any]:
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        raise SchedulerError(
            "Expected dask-cuda for --scheduler local-cuda, but it is not installed. Install "
            "it with `uv sync --extra cuda` (or use --scheduler local:N)."
        ) from None
    import torch

    if not torch.cuda.is_available():
        raise SchedulerError(
            "Expected at least one GPU for --scheduler local-cuda, but torch sees none. Use "
            "--scheduler local:N (CPU workers) or threads."
        )
    with LocalCUDACluster(threads_per_worker=2, resources={"GPU": 1},
                          dashboard_address=None) as cluster:
        yield cluster


def _check_device_workers(client: Any, spec: str, device: str) -> None:
    workers = client.scheduler_info().get("workers", {})
    if not workers:
        raise SchedulerError(
            f"The Dask scheduler at {spec} has no workers. Start one per GPU on each machine: "
            f"{HOW_TO_START_GPU_WORKER}"
        )
    gpu = [a for a, w in workers.items() if w.get("resources", {}).get("GPU", 0) >= 1]
    if not gpu:
        raise SchedulerError(
            f"Expected a worker that declares a GPU resource at {spec} (for the predict and "
            f"attribute stages, device = {device!r}), got none among {len(workers)} workers. "
            f'Start device workers with --resources "GPU=1": {HOW_TO_START_GPU_WORKER}'
        )


def _probe_run_folder(client: Any, spec: str, run_dir: Path) -> None:
    """Every worker must see the run folder: write a token there, ask each worker to read it."""
    from workflows.runner.disk_writes import atomic_write_bytes
    from workflows.runner.worker import probe

    token = f".probe-{uuid.uuid4().hex}"
    path = run_dir / token
    atomic_write_bytes(path, token.encode())
    try:
        answers = client.run(probe, str(run_dir), token)
    finally:
        path.unlink(missing_ok=True)
    blind = sorted(f"{addr} ({a['host']})" for addr, a in answers.items() if not a["seen"])
    if blind:
        raise SchedulerError(
            f"Expected every Dask worker to see the run folder {run_dir}, but "
            f"{len(blind)} cannot: {', '.join(blind)}. Put the output on a filesystem that "
            "every machine mounts at the same path (NFS, a cluster filesystem) and pass it "
            "with --out."
        )
