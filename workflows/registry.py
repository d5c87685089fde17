"""The stage registry: each stage is declared once, next to its shard function.

A :class:`Stage` says what it reads and writes, which config values its freshness depends
on, its unit of work (a shard, or a shard and a method), where it runs (any CPU worker, or a
worker with a device) and its crash points. ``run``, ``status``, ``verify``, ``clean``, stale
detection and the crash tests loop over :data:`STAGES`; nothing dispatches on stage names.

This module is pure planning: units, hashes and dependencies computed from a config. The
shard functions live in :mod:`workflows.stages`, which fills the registry on import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from workflows.config import Config, stable_hash

#: Where a crash test may kill a run: the task's data not yet written, part of it written,
#: all written but not recorded, recorded (the last one fires in the coordinator).
CRASH_POINTS: tuple[str, ...] = ("before-write", "mid-write", "after-write", "after-record")


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


@dataclass(frozen=True)
class Stage:
    """A stage, declared once.

    Attributes
    ----------
    name
        Registry key; records live under ``state/<name>/``.
    run
        The shard task: ``run(task) -> dict`` (see :class:`workflows.stages.Task`). It opens the
        store by path, computes, writes its region and returns what the record needs.
    reads, writes
        Store arrays read and written. The written regions are checksummed into the record.
    after
        Stages whose output this one reads (for dependencies and hash chaining).
    depends
        ``depends(cfg, method, weights_id)``: the config values this stage's own freshness
        depends on (upstream hashes are chained in automatically).
    per_method
        True: one unit per (method, shard) and one record each.
    unit
        ``"shard"`` (``run.shard_size`` images) or ``"sheet"`` (``render.images_per_sheet``).
    device
        True: runs on a worker with a device slot (a ``GPU`` resource on Dask).
    own_process
        True: must not share a process with other tasks of its kind (matplotlib).
    crash_points
        The :data:`CRASH_POINTS` this stage passes through.
    output_file
        For stages that write a file per unit: ``output_file(run_dir, unit) -> Path``.
    output_dirs
        Folders under the run directory this stage owns (removed by ``clean``).
    enabled
        ``enabled(cfg)``: False turns the stage off for that config (no units, no records).
    writes_prefix
        Also written: every store array whose name starts with one of these (arrays made per
        config, e.g. one per metric); checksummed like ``writes``.
    partial_inputs
        True: the stage builds what it can from incomplete inputs (the report). Run alone, it
        does not require its inputs to be complete; a unit built from incomplete inputs is
        not recorded, so it is built again once they are.
    remove_stale
        ``remove_stale(run_dir, valid_indices) -> int``: delete the output files of units
        that have no current record (stages with ``output_file``).
    """

    name: str
    run: Callable[[Any], dict[str, Any]]
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    after: tuple[str, ...]
    depends: Callable[[Config, str | None, str], Any]
    per_method: bool = False
    unit: str = "shard"
    device: bool = False
    own_process: bool = False
    crash_points: tuple[str, ...] = CRASH_POINTS
    output_file: Callable[[Any, Unit], Any] | None = None
    output_dirs: tuple[str, ...] = ()
    doc: str = ""
    enabled: Callable[[Config], bool] | None = None
    writes_prefix: tuple[str, ...] = ()
    partial_inputs: bool = False
    remove_stale: Callable[[Any, set[int]], int] | None = None

    def unit_size(self, cfg: Config) -> int:
        return cfg.render.images_per_sheet if self.unit == "sheet" else cfg.run.shard_size

    def methods(self, cfg: Config) -> tuple[str | None, ...]:
        if self.enabled is not None and not self.enabled(cfg):
            return ()
        return tuple(cfg.method_names) if self.per_method else (None,)


#: The stages in run order; filled by :func:`register` where each stage is defined.
STAGES: dict[str, Stage] = {}


def register(stage: Stage) -> Stage:
    """Add ``stage`` after the stages it reads from (which must be registered already)."""
    missing = [s for s in stage.after if s not in STAGES]
    if missing:
        raise ValueError(f"Expected stages {missing} to be registered before {stage.name!r}.")
    if stage.name in STAGES:
        raise ValueError(f"Expected a new stage name, got {stage.name!r} twice.")
    bad = set(stage.crash_points) - set(CRASH_POINTS)
    if bad:
        raise ValueError(f"Expected crash points among {CRASH_POINTS}, got {sorted(bad)}.")
    STAGES[stage.name] = stage
    return stage


def stages() -> dict[str, Stage]:
    """The registry, with every stage of :mod:`workflows.stages` registered."""
    import workflows.stages  # noqa: F401  (registers on import)

    return STAGES


def stage_names() -> tuple[str, ...]:
    return tuple(stages())


def downstream(name: str) -> tuple[str, ...]:
    """``name`` and every stage that (transitively) reads its output, in run order."""
    out = [name]
    for stage in stages().values():
        if any(up in out for up in stage.after) and stage.name not in out:
            out.append(stage.name)
    return tuple(out)


def upstream(name: str) -> set[str]:
    """Every stage whose output ``name`` reads (transitively)."""
    registry = stages()
    out: set[str] = set()
    todo = list(registry[name].after)
    while todo:
        up = todo.pop()
        if up not in out:
            out.add(up)
            todo += list(registry[up].after)
    return out


def make_units(stage: Stage, n: int, cfg: Config) -> list[Unit]:
    """The units of ``stage`` over ``n`` images: fixed, contiguous runs (the last may be short)."""
    size = stage.unit_size(cfg)
    return [Unit(stage.name, m, i, s, min(s + size, n))
            for m in stage.methods(cfg) for i, s in enumerate(range(0, n, size))]


def all_units(n: int, cfg: Config) -> list[Unit]:
    return [u for stage in stages().values() for u in make_units(stage, n, cfg)]


def stage_hashes(cfg: Config, weights_id: str) -> dict[tuple[str, str | None], str]:
    """Per (stage, method): the hash of its own config values chained with its inputs' hashes.

    Changing one method's ``n_steps`` changes that method's ``attribute`` hash and those that
    read it (its ``aggregate`` and ``normalize``, and ``render``), and nothing else.
    """
    out: dict[tuple[str, str | None], str] = {}
    for stage in stages().values():
        for method in stage.methods(cfg):
            upstream = []
            for up in stage.after:
                up_stage = STAGES[up]
                if not up_stage.methods(cfg):
                    continue  # turned off under this config: nothing to read
                if up_stage.per_method:
                    ms = [method] if method is not None else list(cfg.method_names)
                    upstream += [out[(up, m)] for m in ms]
                else:
                    upstream.append(out[(up, None)])
            own = stage.depends(cfg, method, weights_id)
            out[(stage.name, method)] = stable_hash([stage.name, method, own, upstream])
    return out


def hash_key(stage: str, method: str | None) -> str:
    """The key of a (stage, method) hash in store attributes and ``config.resolved.json``."""
    return f"{stage}/{method}" if method else stage


def flat_hashes(hashes: Mapping[tuple[str, str | None], str]) -> dict[str, str]:
    return {hash_key(s, m): h for (s, m), h in hashes.items()}


def dependencies(unit: Unit, cfg: Config, n: int, streaming: bool = True) -> list[Unit]:
    """The units whose output ``unit`` reads.

    Streaming: the units of each upstream stage that overlap ``unit``'s images (of the same
    method, where both are per method). Not streaming: every unit of every earlier stage, so
    each stage starts only when the previous ones are complete.
    """
    stage = STAGES[unit.stage]
    if not streaming:
        order = list(STAGES)
        return [u for s in order[:order.index(stage.name)] for u in make_units(STAGES[s], n, cfg)]
    out = []
    for up in stage.after:
        up_stage = STAGES[up]
        if not up_stage.methods(cfg):
            continue
        size = up_stage.unit_size(cfg)
        first, last = unit.start // size, (unit.stop - 1) // size
        if up_stage.per_method:
            methods: Iterable[str | None] = (
                [unit.method] if unit.method is not None else cfg.method_names)
        else:
            methods = [None]
        for m in methods:
            for i in range(first, last + 1):
                out.append(Unit(up, m, i, i * size, min((i + 1) * size, n)))
    return out


@dataclass
class StageStats:
    """What one (stage) did in a run: counts, wall span and per-worker device use."""

    stage: str
    units_total: int = 0
    units_run: int = 0
    images_run: int = 0
    seconds: float = 0.0
    busy_seconds: float = 0.0
    device_idle: float | None = None
    workers: list[str] = field(default_factory=list)
