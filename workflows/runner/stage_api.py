"""The stage plugin API: what a stage declares, the hooks the run calls, and the shard task.

A stage is a subclass of :class:`Stage` (the model: dask/distributed's ``WorkerPlugin``): class
attributes declare it, methods are its lifecycle hooks, all optional but :meth:`Stage.run`:

``prepare(group, cfg)``
    before any unit runs: create the store arrays it writes, from the schema.
``run(task)``
    one unit (a shard, or a shard and a method), anywhere: open the store by path, compute,
    write its own region, return what the record needs (:func:`done`).
``finalize(ctx)``
    after the units: the dataset-wide step (the evaluation summary, the report's pages).

A stage says which store arrays it ``reads`` and which it ``writes`` (names the store schema,
:data:`pipeline.store.schema.SCHEMA`, declares); the stages it runs after follow from what it
reads (:class:`workflows.runner.stage_registry.StageRegistry`, which checks both on
registration). The project's stage classes register beside their definition
(:func:`register_stage`, into :data:`STAGE_TYPES`); the run order is one explicit tuple of
their names, :data:`workflows.stages.RUN_ORDER`.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from pipeline.registry import Registry
from pipeline.store.access import explainers, shard_size
from pipeline.store.arrays import array
from pipeline.store.schema import SCHEMA, ArrayFamily, Schema
from pipeline.store.view import StoreView
from workflows.config.run_config import Config
from workflows.runner import fault_injection as faults
from workflows.runner import worker

#: Where a crash test may kill a run: the task's data not yet written, part of it written,
#: all written but not recorded, recorded (the last one fires in the coordinator).
CRASH_POINTS: tuple[str, ...] = ("before-write", "mid-write", "after-write", "after-record")
#: Share of a worker's ``GPU`` resource one device task takes: two device tasks may be on a
#: worker at once, so one reads or writes its shard while the other computes (a per-device
#: lock in the worker keeps the compute one at a time).
DEVICE_SHARE = 0.5
#: Units: ``run.shard_size`` images, or ``render.images_per_sheet`` of them.
UNIT_KINDS = ("shard", "sheet")


@dataclass(frozen=True)
class Unit:
    """One piece of work: images ``[start, stop)`` of ``stage`` (for ``method``, if any)."""

    stage: str
    method: str | None
    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def key(self) -> str:
        """``stage[/method]/index``: the record's path under ``state/``, and the task name."""
        middle = f"{self.method}/" if self.method else ""
        return f"{self.stage}/{middle}{self.index:06d}"


class Stage:
    """A stage plugin. Subclasses set the class attributes and override the hooks.

    Attributes
    ----------
    name
        Registry key; records live under ``state/<name>/``.
    reads
        Store array families it reads (names in the schema). The stages that write them are
        the ones it runs after (:attr:`after`, set on registration).
    writes
        Store array families it writes (names in the schema; a prefix family by its prefix,
        ``"metric_"``). Each array has exactly one writer: a stage, or the store itself
        (``image``, ``label``, ``class_name``, ``explainer``).
    per_method
        True: one unit per (method, shard) and one record each.
    shared
        With ``per_method``: also one unit per shard without a method (its record
        ``state/<name>/<index>``), for the work every method's units share (evaluate's random
        floor). It writes the families without an explainer axis, the method units the
        explainer-split ones (:meth:`unit_families`), and it depends on the per-shard inputs
        only: a change to one method never makes it stale.
    unit
        ``"shard"`` (``run.shard_size`` images) or ``"sheet"`` (``render.images_per_sheet``).
    device
        True: runs on a worker with a device slot (a ``GPU`` resource on Dask).
    crash_points
        The :data:`CRASH_POINTS` this stage passes through.
    output_dirs
        Folders under the run directory this stage owns (removed by ``clean``).
    partial_inputs
        True: the stage builds what it can from incomplete inputs (the report). Run alone, it
        does not require its inputs to be complete; a unit built from incomplete inputs is
        not recorded, so it is built again once they are.
    doc
        One line for ``xai --help`` and the docs.
    how_to_enable
        What turns the stage on, where :meth:`enabled` can say no.
    after, written_families, schema
        Set by :meth:`workflows.runner.stage_registry.StageRegistry.register`: the upstream stages
        (from ``reads``), the schema's families of ``writes`` in schema order (the order a unit's
        checksum reads them in), and that schema.
    """

    name: ClassVar[str] = ""
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    per_method: ClassVar[bool] = False
    shared: ClassVar[bool] = False
    #: What the shared unit computes, in words (``xai status`` shows it as its explainer).
    shared_label: ClassVar[str] = "shared"
    unit: ClassVar[str] = "shard"
    device: ClassVar[bool] = False
    crash_points: ClassVar[tuple[str, ...]] = CRASH_POINTS
    output_dirs: ClassVar[tuple[str, ...]] = ()
    partial_inputs: ClassVar[bool] = False
    #: Facts its records keep for ``xai status`` (``"skipped"``: the shard's skipped images;
    #: ``"completeness"``: per-image completeness errors), so that it reads no arrays.
    record_facts: ClassVar[tuple[str, ...]] = ()
    doc: ClassVar[str] = ""
    #: For a stage that can be off: what turns it on, for the message when it is asked for.
    how_to_enable: ClassVar[str] = ""

    def __init__(self) -> None:
        self.after: tuple[str, ...] = ()
        self.written_families: tuple[ArrayFamily, ...] = ()
        self.schema: Schema = SCHEMA
        #: The registry this instance belongs to (one: its ``after`` is that registry's).
        self.registered = False

    def __repr__(self) -> str:
        return f"<stage {self.name}>"

    # ------------------------------------------------------------------ declarations

    def enabled(self, cfg: Config) -> bool:
        """False turns the stage off for ``cfg``: no units, no records, no arrays."""
        return True

    def depends(self, cfg: Config, method: str | None, weights_id: str) -> Any:
        """The config values this stage's own freshness depends on (JSON-able). Upstream
        stages' hashes are chained in by the registry."""
        return None

    def methods(self, cfg: Config) -> tuple[str | None, ...]:
        """The methods it has units for: every configured one (after ``None``, the shared
        unit's, for a :attr:`shared` stage), or ``(None,)``; ``()`` off."""
        if not self.enabled(cfg):
            return ()
        if not self.per_method:
            return (None,)
        return ((None,) if self.shared else ()) + tuple(cfg.method_names)

    def unit_families(self, unit: Unit) -> tuple[ArrayFamily, ...]:
        """The families ``unit`` writes: all of :attr:`written_families`, except in a
        per-method stage with a :attr:`shared` unit, where a method's unit writes the
        explainer-split ones (its slot) and the shared unit the others."""
        if not (self.per_method and self.shared):
            return self.written_families
        split = unit.method is not None
        return tuple(f for f in self.written_families if f.split_explainer == split)

    def unit_size(self, cfg: Config) -> int:
        return cfg.render.images_per_sheet if self.unit == "sheet" else cfg.run.shard_size

    def resources(self) -> dict[str, float]:
        """What a worker must offer to run a unit (Dask resources; executors route on it)."""
        return {"GPU": DEVICE_SHARE} if self.device else {}

    def output_file(self, run_dir: Path, unit: Unit) -> Path | None:
        """The file a unit writes, for stages whose output is a file per unit (its checksum is
        the record's); None for stages that write store arrays."""
        return None

    # ------------------------------------------------------------------ hooks

    def prepare(self, group: Any, cfg: Config) -> None:
        """Before any unit: create the (fixed) arrays this stage writes, or drop them when the
        stage is off. Arrays with the right shape are kept, data and all."""
        if not self.enabled(cfg):
            drop(group, self.schema.instances(group, self.written_families))
            return
        sizes, shard = store_sizes(group, cfg), shard_length(group)
        for fam in self.written_families:
            if not fam.prefix and self.schema.wanted(group, fam):
                self.schema.create(group, fam.name, sizes, shard)

    def run(self, task: Task) -> dict[str, Any]:
        """One unit: compute, write its region, return :func:`done`."""
        raise NotImplementedError(f"stage {self.name!r} has no run()")

    def remove_stale(self, run_dir: Path, valid: set[int]) -> int:
        """Delete the output files of units without a current record (``valid``: the unit
        indices that have one); return how many were removed."""
        return 0

    def finalize(self, ctx: Context) -> dict[str, Any] | None:
        """After the units: a dataset-wide step. What it returns is kept in the run summary
        (and ``summary.json``) under the stage's name."""
        return None


StageType = TypeVar("StageType", bound=type[Stage])

#: The project's stage classes by name, each added beside its class (:func:`register_stage`);
#: :data:`workflows.stages.RUN_ORDER` puts them in run order. A plugin from outside the
#: project need not register here: it builds a planning registry of its own.
STAGE_TYPES: Registry[type[Stage]] = Registry("stage")


def register_stage(cls: StageType) -> StageType:
    """Class decorator: add a stage class to :data:`STAGE_TYPES` under its ``name``."""
    STAGE_TYPES.add(cls.name, cls)
    return cls


@dataclass
class Context:
    """What :meth:`Stage.finalize` sees: the run as it stands after the units ran.

    ``registry`` is the :class:`workflows.runner.stage_registry.StageRegistry`, ``summary`` the
    :class:`workflows.runner.run_summary.RunSummary` so far and ``reporter`` its reporter
    (typed loosely: those modules import this one).
    """

    cfg: Config
    group: Any
    run_dir: Path
    records: Any
    hashes: Mapping[tuple[str, str | None], str]
    registry: Any
    planned: Mapping[str, list[Unit]]
    pending: Mapping[str, list[Unit]]
    only: str | None
    summary: Any
    outputs: dict[str, Any]
    reporter: Any


@dataclass(frozen=True)
class Task:
    """One unit of one stage, with everything needed to run it anywhere (picklable).

    ``resources`` is what the executor routes on (``{"GPU": 0.5}`` for a device stage);
    ``model`` tells a device stage's worker which model to load.
    """

    unit: Unit
    stage: Stage
    store_path: str
    run_dir: str
    cfg: Config
    resources: Mapping[str, float] = field(default_factory=dict)
    model: worker.ModelSpec | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def execute(task: Task) -> dict[str, Any]:
    """Run ``task`` on this worker; return the record's content (without the hash)."""
    started = time.time()
    result = task.stage.run(task)
    result.setdefault("worker", worker.identity())
    result["started"], result["ended"] = started, time.time()
    return result


# --------------------------------------------------------------------------- helpers


def store_sizes(group: Any, cfg: Config) -> dict[str, int]:
    """The sizes of the store's dimensions under ``cfg`` (a stage adds its own, e.g. steps)."""
    crop = cfg.dataset.crop
    return {"image": array(group, "image").shape[0], "explainer": len(explainers(group)),
            "y": crop, "x": crop,
            "class_name": len(group.attrs.get("classes") or ()) or cfg.model_classes()}


def shard_length(group: Any) -> int:
    """The store's images per shard (see :func:`pipeline.store.access.shard_size`)."""
    return shard_size(group)


def drop(group: Any, names: list[str]) -> None:
    for name in names:
        del group[name]


def open_view(task: Task, mode: str = "r+") -> StoreView:
    """The task's handle on the store (opened once; see
    :class:`pipeline.store.view.StoreView`)."""
    return StoreView(task.store_path, mode=mode)


def unit_rows(task: Task) -> slice:
    return slice(task.unit.start, task.unit.stop)


def to_input(pixels: np.ndarray, device: Any, norm: Any = None) -> Any:
    """Stored crops ``(N, H, W, 3)`` uint8 as the model's input ``(N, 3, H, W)``: scaled to
    [0, 1] and normalized with the model's mean and std (``norm``; ImageNet's by default)."""
    from pipeline.data.images import from_uint8_hwc, normalize

    return normalize(from_uint8_hwc(pixels), norm).to(device)


def explained(data: Mapping[str, np.ndarray], target: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows with a map to compute (usable, predicted, with a target class), and each
    row's target class (the prediction, or the label under ``[run] target = "label"``)."""
    classes = data["label"] if target == "label" else data["pred"]
    ok = np.flatnonzero((data["status"] == "ok") & (data["pred"] >= 0) & (classes >= 0))
    return ok, classes


def sheet_style(cfg: Config) -> Any:
    """The display settings of ``[render]`` as a :class:`pipeline.render.heatmaps.SheetStyle`."""
    from pipeline.render.heatmaps import SheetStyle

    r = cfg.render
    return SheetStyle(colormap=r.colormap, signed_colormap=r.signed_colormap,
                      clip_percentile=r.clip_percentile, signed=r.signed, overlay=r.overlay)


#: Why an image is not explained under ``[run] target = "label"``.
NO_LABEL = "no label (run.target = label explains the ground-truth class)"


def explained_status(status: str, label: int, target: str) -> str:
    """The image's status as far as its maps go: ``ok``, or why it has no maps (its ingest
    status, or :data:`NO_LABEL` when the label is the target and it has none)."""
    if status == "ok" and target == "label" and label < 0:
        return NO_LABEL
    return status


def file_checksum(path: Path) -> str:
    """CRC32 of a file's bytes."""
    return f"{zlib.crc32(path.read_bytes()):08x}"


def unit_checksum(stage: Stage, store_path: Path | str, run_dir: Path | str, unit: Unit,
                  view: StoreView | None = None) -> str:
    """What a unit's record must say: its output file's CRC, or that of its store region.

    Records carry it (read back after the write), so ``xai verify`` can tell a deleted or
    damaged chunk from a legitimately empty one: Zarr reads a missing chunk as fill values.
    The arrays are the unit's (:meth:`Stage.unit_families`), read in schema order; a stage
    that writes families of arrays (one per metric) reads all of them in name order.
    """
    path = stage.output_file(Path(run_dir), unit)
    if path is not None:
        return file_checksum(path) if path.is_file() else "missing"
    store = view or StoreView(store_path, mode="r")
    families = stage.unit_families(unit)
    names = stage.schema.instances(store, families)
    if any(f.prefix for f in families):
        names = sorted(names)
    slot = store.slot(unit.method) if unit.method else None
    return store.checksum(names, slice(unit.start, unit.stop), slot)


def done(task: Task, view: StoreView | None = None, device: Any = None, **info: Any
         ) -> dict[str, Any]:
    """What a shard task returns once its data is written: the checksum read back (through
    ``view``, the task's handle, when it has one), the image count, who ran it and
    ``info``."""
    unit = task.unit
    faults.point(f"{unit.stage}:after-write")
    return {"checksum": unit_checksum(task.stage, task.store_path, task.run_dir, unit, view),
            "images": unit.size, "worker": worker.identity(device), **info}
