"""Dask scheduling: run a list of delayed shard tasks on the scheduler the user chose.

``threads``, ``processes``, ``synchronous`` (dask's local schedulers), ``local:N`` (a
``distributed.LocalCluster`` of N worker processes) or ``tcp://host:port`` (an existing Dask
scheduler). ``on_done(i)`` is called in the calling thread as task ``i`` finishes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import dask
from dask.callbacks import Callback
from dask.delayed import Delayed

from pipeline.errors import ConfigError

LOCAL = ("threads", "processes", "synchronous")


def validate(spec: str) -> str:
    """Check a ``--scheduler`` value; return it unchanged."""
    if spec in LOCAL or spec.startswith(("tcp://", "tls://", "ucx://")):
        return spec
    head, _, n = spec.partition(":")
    if head == "local" and n.isdigit() and int(n) >= 1:
        return spec
    raise ConfigError(
        f"Expected --scheduler threads, processes, synchronous, local:N or tcp://host:port, "
        f"got {spec!r}."
    )


class Runner:
    """Runs delayed tasks on one scheduler; open with :func:`runner`."""

    def __init__(self, spec: str, client: Any = None) -> None:
        self.spec = spec
        self.client = client

    def run(self, tasks: Sequence[Delayed], on_done: Callable[[int], None] | None = None,
            local_override: str | None = None) -> list[Any]:
        """Compute ``tasks``; ``local_override`` replaces a local ``threads`` scheduler."""
        if not tasks:
            return []
        if self.client is not None:
            from distributed import as_completed

            futures = self.client.compute(list(tasks))
            index = {f.key: i for i, f in enumerate(futures)}
            results: list[Any] = [None] * len(futures)
            for fut in as_completed(futures):
                i = index[fut.key]
                results[i] = fut.result()
                if on_done:
                    on_done(i)
            return results
        scheduler = self.spec
        if local_override and scheduler == "threads":
            scheduler = local_override
        keys = {t.key: i for i, t in enumerate(tasks)}

        def posttask(key: Any, _result: Any, _dsk: Any, _state: Any, _worker: Any) -> None:
            if key in keys and on_done:
                on_done(keys[key])

        with Callback(posttask=posttask):
            return list(dask.compute(*tasks, scheduler=scheduler))


@contextlib.contextmanager
def runner(spec: str) -> Iterator[Runner]:
    """Open the scheduler (start a LocalCluster or connect to one) for the run's duration."""
    validate(spec)
    if spec in LOCAL:
        yield Runner(spec)
        return
    from distributed import Client, LocalCluster

    if spec.startswith("local:"):
        n = int(spec.split(":", 1)[1])
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            yield Runner(spec, client)
        return
    try:
        client = Client(spec, timeout="10s")
    except OSError as exc:
        raise ConfigError(f"Cannot reach the Dask scheduler at {spec}: {exc}") from exc
    with client:
        yield Runner(spec, client)
