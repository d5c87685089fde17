"""``aggregate`` and ``normalize``: the per-map post-processing, one method and shard at a time
(:mod:`pipeline.attribution.postprocess` on the stored block)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from pipeline.attribution.postprocess import aggregate_block, normalize_block
from workflows.config.run_config import Config
from workflows.runner import fault_injection as faults
from workflows.runner.disk_writes import disk_errors
from workflows.runner.stage_api import Context, Stage, Task, done, open_view, register_stage
from workflows.stages.attribute import record_storage_error

#: Neither stage has a mid-write point: each writes one array in one assignment.
POINTS = ("before-write", "after-write", "after-record")


def _postprocess(task: Task, src: str, dst: str, fn: Callable[[np.ndarray], np.ndarray]
                 ) -> dict[str, Any]:
    u = task.unit
    store = open_view(task)
    slot, rows = store.slot(str(u.method)), slice(u.start, u.stop)
    block = store.read_maps(src, slot, rows)
    out = fn(block[None])[0]
    faults.point(f"{u.stage}:before-write")
    with disk_errors(task.store_path):
        error = store.write_maps(dst, slot, rows, out)
    return done(task, store, **({} if error is None else {"storage_error": error}))


class _PerMap(Stage):
    """A per-map step: ``block`` on the stored ``source`` block of one method and shard,
    written to the stage's own array."""

    per_method = True
    crash_points = POINTS
    source: ClassVar[str] = ""
    target: ClassVar[str] = ""
    #: What the step computes, in words: its freshness (a changed step changes this).
    version: ClassVar[str] = ""

    def depends(self, cfg: Config, method: str | None, weights_id: str) -> Any:
        return self.version

    #: ``block(source block) -> target block`` (:mod:`pipeline.attribution.postprocess`).
    block: ClassVar[Callable[[np.ndarray], np.ndarray]]

    def run(self, task: Task) -> dict[str, Any]:
        return _postprocess(task, self.source, self.target, type(self).block)


@register_stage
class Aggregate(_PerMap):
    name = "aggregate"
    reads = ("raw",)
    writes = ("aggregated", "aggregated_scale")
    source, target, version = "raw", "aggregated", "channel-sum"
    block = staticmethod(aggregate_block)
    doc = "channel sum of each raw map"

    def finalize(self, ctx: Context) -> dict[str, Any] | None:
        return record_storage_error(ctx, self.name, "aggregated")


@register_stage
class Normalize(_PerMap):
    name = "normalize"
    reads = ("aggregated",)
    writes = ("normalized",)
    source, target, version = "aggregated", "normalized", "abs-min-max"
    block = staticmethod(normalize_block)
    doc = "abs, minus the minimum, over the maximum, per map, in [0, 1]"

    def finalize(self, ctx: Context) -> dict[str, Any] | None:
        return record_storage_error(ctx, self.name, "normalized")
