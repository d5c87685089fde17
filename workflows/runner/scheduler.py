"""Where shard tasks run: ``--scheduler`` parsed into an executor for the run's duration.

- ``synchronous``: one task at a time in this process (debugging, crash tests).
- ``threads`` (default) / ``processes``: this process's device for the device stages, with CPU
  stages on threads or processes alongside.
- ``local:N``: a ``distributed.LocalCluster`` of N worker processes; each is a device slot
  (the CPU, or one GPU each when GPUs are visible) and declares ``GPU=1``.
- ``local-cuda``: ``dask_cuda.LocalCUDACluster``, one worker per visible GPU (``uv sync
  --extra cuda``).
- ``tcp://host:port``: an existing Dask scheduler. Device stages run only on workers started
  with ``--resources "GPU=1"``; CPU stages on any worker. Every worker must see the run folder.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, XaiError
from workflows.runner.executors import DaskExecutor, Executor, InlineExecutor, PoolExecutor

LOCAL = ("threads", "processes", "synchronous")
REMOTE = ("tcp://", "tls://", "ucx://")
#: How long to wait for a ``tcp://`` scheduler to answer.
CONNECT_TIMEOUT_S = 10
HOW_TO_START_GPU_WORKER = 'dask worker tcp://HOST:8786 --nthreads 2 --resources "GPU=1"'


class SchedulerError(XaiError):
    """The scheduler or its workers cannot run this run; the message says what to do."""


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
    from workflows.runner.records import atomic_write_bytes
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
