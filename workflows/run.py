"""Orchestration of a run: plan units, skip what is done, stream the rest, summarize.

``run_pipeline`` is what ``xai run`` calls; ``run_status``, ``verify`` and ``clean`` back
``xai status``, ``xai verify`` and ``xai clean``. All of them loop over the stage registry
(:mod:`workflows.registry`). Nothing here parses arguments or prints: a :class:`Reporter`
receives progress and warnings.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from pipeline.errors import ConfigError, StoreError
from pipeline.store import (
    EXPLAINER_ARRAYS,
    array,
    copy_slot,
    create_store,
    explainers,
    open_store,
    resize_explainers,
    schema_problem,
)
from workflows import faults
from workflows.config import Config, stable_hash
from workflows.engine import run_units
from workflows.registry import (
    STAGES,
    StageStats,
    Unit,
    all_units,
    dependencies,
    downstream,
    flat_hashes,
    hash_key,
    make_units,
    stage_hashes,
    stage_names,
    stages,
)
from workflows.scheduler import open_executor
from workflows.stages import RunSettings, Task, unit_checksum
from workflows.state import Records, RunLock, atomic_write_json, disk_errors, read_json
from workflows.worker import EngineSpec, resolve_device

if TYPE_CHECKING:  # torch-free import for `xai status`: datasets load torchvision
    from pipeline.datasets import Manifest

RANDOM_WEIGHTS_WARNING = (
    "RANDOM WEIGHTS: ImageNet weights were not available, so this run used seeded random "
    "weights. The attributions say nothing about a real model."
)
NOISE_NOTE = (
    "SmoothGrad noise: per image, from a torch.Generator on the device that ran the shard "
    "(see each record's worker.device), seeded with image_seed(run.seed, image index); CPU "
    "and CUDA generators draw different numbers for the same seed."
)
PACKAGES = ("torch", "torchvision", "captum", "zarr", "dask", "distributed", "numpy", "pillow",
            "matplotlib")
Hashes = dict[tuple[str, str | None], str]


class Reporter(Protocol):
    """Receives progress; the CLI draws it, tests may ignore it."""

    def stage_start(self, stage: str, total_images: int, done_images: int) -> None: ...
    def advance(self, stage: str, images: int) -> None: ...
    def stage_end(self, stage: str) -> None: ...
    def warn(self, message: str) -> None: ...
    def info(self, message: str) -> None: ...
    def training(self, what: str, done: int, total: int) -> None: ...


class SilentReporter:
    """A reporter that keeps warnings and drops everything else."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def stage_start(self, stage: str, total_images: int, done_images: int) -> None: ...
    def advance(self, stage: str, images: int) -> None: ...
    def stage_end(self, stage: str) -> None: ...
    def info(self, message: str) -> None: ...

    def training(self, what: str, done: int, total: int) -> None: ...

    def warn(self, message: str) -> None:
        self.warnings.append(message)


@dataclass
class RunSummary:
    """What a run did and where its outputs are."""

    run_dir: Path
    store_path: Path
    sheets_dir: Path
    images: int
    ok: int
    skipped: list[tuple[str, str]]
    weights_id: str
    random_weights: bool
    device: str
    scheduler: str = "threads"
    streaming: bool = True
    stats: list[StageStats] = field(default_factory=list)
    seconds: float = 0.0
    completeness: list[Completeness] = field(default_factory=list)
    evaluation: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def stage_seconds(self) -> float:
        """The sum of the stages' own wall times (what a run without overlap would take)."""
        return sum(st.seconds for st in self.stats)

    def to_dict(self) -> dict[str, Any]:
        """``summary.json``: the same numbers as the console table."""
        return {
            "run_dir": str(self.run_dir), "images": self.images, "ok": self.ok,
            "skipped": len(self.skipped), "weights_id": self.weights_id,
            "random_weights": self.random_weights, "device": self.device,
            "scheduler": self.scheduler, "streaming": self.streaming,
            "seconds": round(self.seconds, 3),
            "sum_of_stage_seconds": round(self.stage_seconds, 3),
            "completeness": [c.to_dict() for c in self.completeness],
            "report": self.report,
            "stages": [{
                "stage": st.stage, "units_run": st.units_run, "units_total": st.units_total,
                "images": st.images_run, "seconds": round(st.seconds, 3),
                "img_per_s": round(st.images_run / st.seconds, 3) if st.seconds else None,
                "device_idle": None if st.device_idle is None else round(st.device_idle, 4),
                "workers": st.workers,
            } for st in self.stats],
        }


@dataclass
class Completeness:
    """How well one method's attributions add up: the relative completeness error
    ``|delta| / |F(x) - F(baseline)|`` over the explained images."""

    method: str
    images: int
    median: float
    worst: float
    worst_image: str
    threshold: float
    flagged: list[tuple[str, float]]
    #: ``rule = "adaptive"``: path points per image (median, 90th percentile, max), the
    #: median final residual, and the images whose gap F(x) - F(baseline) was zero (they
    #: stopped at the starting grid, residual NaN).
    adaptive: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "images": self.images, "median": self.median,
                "worst": self.worst, "worst_image": self.worst_image,
                "threshold": self.threshold,
                "flagged": [{"image": i, "relative_error": r} for i, r in self.flagged],
                "adaptive": self.adaptive}


def _plan(cfg: Config, n: int, records: Records, hashes: Hashes
          ) -> tuple[dict[str, list[Unit]], dict[str, list[Unit]]]:
    """Every stage's units, and those without a current record."""
    planned = {name: make_units(stage, n, cfg) for name, stage in stages().items()}
    pending = {name: [u for u in units if not records.is_done(u.key, hashes[(u.stage, u.method)])]
               for name, units in planned.items()}
    return planned, pending


def _check_inputs_current(only: str, planned: dict[str, list[Unit]],
                          pending: dict[str, list[Unit]], store_path: Path) -> None:
    """Every stage ``only`` reads from (transitively) is complete under this config."""
    if only not in STAGES:
        raise ConfigError(f"Expected a stage in {', '.join(stage_names())}, got {only!r}.")
    if not planned[only]:
        raise ConfigError(f"Expected the {only} stage to be on under this config, but it is "
                          "off (for evaluate: add an [evaluate] table with metrics).")
    needed: list[str] = []
    todo = list(STAGES[only].after)
    while todo:
        name = todo.pop(0)
        if name not in needed:
            needed.append(name)
            todo += list(STAGES[name].after)
    for name in [s for s in STAGES if s in needed]:  # in run order: name the first one
        missing = pending.get(name, [])
        if missing:
            methods = sorted({u.method for u in missing if u.method})
            what = f" of {', '.join(methods)}" if methods else ""
            raise StoreError(
                f"Expected the {name} stage{what} to be complete and current in "
                f"{store_path} before {only}, got {len(missing)} of {len(planned[name])} units "
                f"missing or stale. Run `xai run` with the same options first (it runs "
                f"{name} and everything after it).")


def _check_same_run(only: str, store_path: Path, hashes: Hashes) -> None:
    """A stage run alone on partial inputs (the report) shows the run as it is: refuse a
    config whose other stages differ from the store's, before anything is changed (syncing
    methods or purging records would alter the run)."""
    group = open_store(store_path, mode="r")
    stored = dict(group.attrs.get("stage_hashes") or {})
    current = {k: v for k, v in flat_hashes(hashes).items() if k.split("/")[0] != only}
    stored = {k: v for k, v in stored.items() if k.split("/")[0] != only}
    differ = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
    if differ:
        shown = ", ".join(differ[:6]) + (" ..." if len(differ) > 6 else "")
        raise ConfigError(
            f"Expected the config the run at {store_path.parent} was made with, got one that "
            f"changes {shown}. `xai {only}` shows the run as it is: drop the --set options "
            f"that change it, or run `xai run` with them first.")


def _write_evaluation(group: Any, cfg: Config, run_dir: Path) -> dict[str, Any]:
    """``evaluation.json`` and ``evaluation.png`` from the store's evaluation arrays."""
    from workflows.evaluate import evaluation_figure, evaluation_summary

    summary = evaluation_summary(group, cfg)
    if summary:
        with disk_errors(run_dir):
            atomic_write_json(run_dir / "evaluation.json", summary)
            evaluation_figure(summary, group, cfg, run_dir / "evaluation.png")
    return summary


def completeness_summary(group: Any, methods: Sequence[str], threshold: float
                         ) -> list[Completeness]:
    """Per method with a completeness property (the IG methods): median and worst relative
    completeness error, and the images above ``threshold``, worst first."""
    from pipeline.methods import METHODS, relative_completeness_error

    names = explainers(group)
    if "gap" not in group:
        return []
    ids = array(group, "image")[:].tolist()
    out = []
    for method in methods:
        spec = METHODS.get(method)
        if spec is None or not spec.has_delta or method not in names:
            continue
        slot = names.index(method)
        rel = relative_completeness_error(array(group, "delta")[slot], array(group, "gap")[slot])
        done = np.flatnonzero(np.isfinite(rel))
        if not done.size:
            continue
        worst = int(done[np.argmax(rel[done])])
        above = done[rel[done] > threshold]
        above = above[np.argsort(-rel[above], kind="stable")]
        out.append(Completeness(
            method, int(done.size), float(np.median(rel[done])), float(rel[worst]),
            str(ids[worst]), threshold, [(str(ids[i]), float(rel[i])) for i in above],
            _adaptive_facts(group, slot)))
    return out


def _adaptive_facts(group: Any, slot: int) -> dict[str, Any] | None:
    """Steps and residuals of an adaptive IG method (None for the fixed rules)."""
    if "steps" not in group:
        return None
    steps = np.asarray(array(group, "steps")[slot], dtype=np.float64)
    residual = np.asarray(array(group, "residual")[slot], dtype=np.float64)
    used = np.isfinite(steps)
    if not used.any():
        return None
    s = steps[used]
    r = residual[used & np.isfinite(residual)]
    return {"steps_median": float(np.median(s)), "steps_p90": float(np.percentile(s, 90)),
            "steps_max": int(s.max()), "steps_total": int(s.sum()),
            "residual_median": float(np.median(r)) if r.size else None,
            "zero_gap": int((used & ~np.isfinite(residual)).sum())}


def skipped_images(group: Any, target: str) -> list[tuple[str, str]]:
    """``(image id, why)`` for every image without maps: its ingest status, or no label when
    the label is the target (see :func:`workflows.stages.explained_status`). Images not yet
    ingested (empty status) are listed with an empty reason."""
    from workflows.stages import explained_status

    status = array(group, "status")[:].tolist()
    labels = np.asarray(array(group, "label")[:])
    ids = array(group, "image")[:].tolist()
    out = []
    for i, st in enumerate(status):
        why = explained_status(str(st), int(labels[i]), target)
        if why != "ok":
            out.append((str(ids[i]), why))
    return out


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def expected_weights_id(cfg: Config) -> str:
    """The weights identity a run would use, without loading the model (for status)."""
    from pipeline.weights import IMAGENET_ID, file_sha256, imagenet_cache_path

    w = cfg.model.weights
    if w == "evidence":
        return f"evidence:resnet18-{cfg.evidence_settings().key()}"
    if w == "imagenet" or (w == "auto" and imagenet_cache_path().exists()):
        return IMAGENET_ID
    if w in ("random", "auto"):
        return f"random:seed={cfg.run.seed}"
    path = Path(w)
    return f"file:{path.name}:sha256={file_sha256(path)}" if path.is_file() else f"file:{w}"


# ------------------------------------------------------------------------ the store


def _first_stage() -> str:
    """The stage that fills the store from the files: its hash is the store's identity."""
    return next(iter(stages()))


def _store_matches(store_path: Path, ingest_hash: str, n: int) -> bool:
    try:
        group = open_store(store_path)
        return (group.attrs.get("stage_hashes", {}).get(_first_stage()) == ingest_hash
                and array(group, "image").shape[0] == n)
    except StoreError:
        return False


def refuse_old_schema(store_path: Path) -> None:
    """A store written before the current schema is refused, never misread or replaced."""
    if not (store_path / "zarr.json").is_file():
        return
    try:
        group = open_store(store_path, mode="r", check_schema=False)
    except StoreError:
        return  # unreadable: replaced like a missing one
    problem = schema_problem(group)
    if problem:
        raise StoreError(f"{store_path}: {problem}")


#: The config keys that define a store's image axis: a change needs a new store.
STORE_KEYS = ("dataset.", "run.shard_size")


def _store_differences(store_path: Path, cfg: Config, n: int) -> list[str]:
    """``key: old -> new`` for the settings that make the existing store unusable."""
    try:
        group = open_store(store_path, mode="r")
        old = group.attrs.get("config", {})
        stored_n = array(group, "image").shape[0]
    except StoreError as exc:
        return [f"the store cannot be read ({exc})"]
    changes = [c for c in config_changes(old, cfg.to_dict()) if c.startswith(STORE_KEYS)]
    old_root = (old.get("dataset") or {}).get("root")
    new_root = str(cfg.dataset.root) if cfg.dataset.root else None
    if old_root != new_root:
        changes.insert(0, f"dataset.root: {old_root!r} -> {new_root!r}")
    if cfg.dataset.layout in ("synthetic", "evidence"):
        changes += [c for c in config_changes(old, cfg.to_dict()) if c.startswith("run.seed")]
    if stored_n != n and not changes:
        changes.append(f"images: {stored_n} in the store -> {n} now")
    return changes or ["the store was created by a different version of these settings"]


def _replace_store(cfg: Config, manifest: Manifest, store_path: Path, records: Records,
                   ingest: str) -> None:
    """Build the new store beside the old one, then swap them; the old one is removed last.

    A kill at any point leaves a readable store: the old one until the swap, the new one
    after it (an interrupted swap is finished by :func:`_finish_swap` on the next run).
    """
    new, old = store_path.with_name(store_path.name + ".new"), \
        store_path.with_name(store_path.name + ".old")
    shutil.rmtree(new, ignore_errors=True)
    with disk_errors(store_path):
        create_store(new, manifest.ids, manifest.labels, cfg.run.shard_size, cfg.dataset.crop,
                     {"stage_hashes": {_first_stage(): ingest}}, n_classes=cfg.model_classes())
    faults.point("replace:new-created")
    shutil.rmtree(records.root, ignore_errors=True)
    for stage in stages().values():
        for folder in stage.output_dirs:
            shutil.rmtree(cfg.run_dir / folder, ignore_errors=True)
    if store_path.exists():
        store_path.rename(old)
    faults.point("replace:old-moved")
    new.rename(store_path)
    shutil.rmtree(old, ignore_errors=True)


def _finish_swap(store_path: Path) -> None:
    """Finish a replacement that was killed between moving the old store and the new one."""
    new, old = store_path.with_name(store_path.name + ".new"), \
        store_path.with_name(store_path.name + ".old")
    if not store_path.exists() and new.exists() and old.exists():
        new.rename(store_path)
    if store_path.exists():
        shutil.rmtree(old, ignore_errors=True)


def _prepare_store(cfg: Config, manifest: Manifest, store_path: Path, records: Records,
                   hashes: Hashes, force: Sequence[str], reporter: Reporter,
                   replace: bool = False) -> None:
    """Create the store, keep the matching one, or refuse to discard one that differs.

    Raises
    ------
    StoreError
        The existing store was made with other dataset settings (or ``shard_size``), and
        neither ``replace`` nor ``--force`` on the first stage asked to discard it.
    """
    _finish_swap(store_path)
    refuse_old_schema(store_path)
    first = _first_stage()
    ingest = hashes[(first, None)]
    if not store_path.exists():
        _replace_store(cfg, manifest, store_path, records, ingest)
        return
    if first in force or not _store_matches(store_path, ingest, len(manifest)):
        if not (replace or first in force):
            changes = _store_differences(store_path, cfg, len(manifest))
            raise StoreError(
                f"Expected the settings of the existing store at {store_path}, got "
                f"different ones: {'; '.join(changes)}. Nothing was changed. To keep it, "
                "write the new run elsewhere with --out DIR; to discard it and start over, "
                "add --replace."
            )
        reporter.info(f"replacing the store at {store_path} (--replace)")
        _replace_store(cfg, manifest, store_path, records, ingest)
        return
    group = open_store(store_path)
    stored = array(group, "image")[:].tolist()  # type: ignore[union-attr]
    if stored != list(manifest.ids):
        reporter.warn(
            f"The dataset folder changed since this store was created ({len(manifest)} images "
            f"now, {len(stored)} in the store). The store keeps its fixed image list; run "
            "`xai clean` or `--force ingest` to start over with the new files."
        )


def _method_folders(method: str) -> list[str]:
    return [hash_key(s.name, method) for s in stages().values() if s.per_method]


def sync_explainers(group: Any, cfg: Config, records: Records) -> list[str]:
    """Make the store's explainer axis hold the configured methods; return the added ones.

    Methods already in the store keep their data and records: adding a method computes only
    that method. Removed methods are dropped; the slots after them move down (their data is
    copied, their records set aside during the copy and restored after it, so a crash
    part-way only costs recomputation, never a record that claims data it does not have).
    """
    stored = explainers(group)
    wanted = list(cfg.method_names)
    kept = [m for m in stored if m in wanted]
    order = kept + [m for m in wanted if m not in stored]
    if order == stored and all(name in group for name in EXPLAINER_ARRAYS):
        return []
    added = [m for m in wanted if m not in stored]
    removed = [m for m in stored if m not in wanted]
    moved = [m for m in kept if stored.index(m) != order.index(m)]
    saved = {p: p.read_bytes() for m in moved for f in _method_folders(m)
             for p in records.in_folder(f)}
    for m in added + removed + moved:
        for folder in _method_folders(m):
            records.clear(folder)
    with disk_errors(cfg.run_dir / "store.zarr"):
        for m in moved:  # in slot order: a slot is overwritten only after it was copied
            copy_slot(group, stored.index(m), order.index(m), cfg.run.shard_size)
        resize_explainers(group, order, cfg.dataset.crop)
    for path, content in saved.items():
        from workflows.state import atomic_write_bytes

        atomic_write_bytes(path, content)
    return added


def baseline_descriptions(cfg: Config) -> dict[str, str]:
    """Per configured IG method, the baseline its paths start from, in words."""
    from pipeline.baselines import describe
    from pipeline.methods import METHODS

    return {m: describe(p) for m, p in cfg.methods.items()
            if m in METHODS and "baseline" in METHODS[m].params}


def _write_attrs(group: Any, cfg: Config, hashes: Hashes, loaded: Any, device: str) -> None:
    attrs = {
        "config": cfg.to_dict(),
        "config_hash": stable_hash(cfg.to_dict()),
        "stage_hashes": flat_hashes(hashes),
        "package_versions": package_versions(),
        "weights_id": loaded.weights_id,
        "random_weights": bool(loaded.is_random),
        "warning": RANDOM_WEIGHTS_WARNING if loaded.is_random else "",
        "head": cfg.model.head,
        "precision": cfg.run.precision,
        "device": device,
        "preprocessing": {"resize": cfg.dataset.resize, "crop": cfg.dataset.crop,
                          "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "noise": NOISE_NOTE,
        "target": cfg.run.target,
        "baselines": baseline_descriptions(cfg),
        "classes": list(loaded.classes),
        "model_report": loaded.report,
    }
    current = dict(group.attrs)
    if any(current.get(k) != v for k, v in attrs.items()):
        group.attrs.update(attrs)


def _forced(force: str | None) -> tuple[str, ...]:
    if force is None:
        return ()
    if force not in stages():
        raise ConfigError(
            f"Expected --force to name a stage ({', '.join(stage_names())}), got {force!r}.")
    return downstream(force)


def _purge_stale(records: Records, cfg: Config, hashes: Hashes) -> None:
    """Drop records made under another config: their data may be overwritten since."""
    for stage in stages().values():
        for method in stage.methods(cfg):
            digest = hashes[(stage.name, method)]
            for rec in records.in_folder(hash_key(stage.name, method)):
                data = read_json(rec)
                if not isinstance(data, dict) or data.get("hash") != digest:
                    rec.unlink(missing_ok=True)


# ------------------------------------------------------------------------ running


def _engine_spec(cfg: Config, loaded: Any) -> EngineSpec:
    # Workers load exactly what the coordinator resolved: `auto` that fell back to random
    # weights stays random on every worker.
    weights = "random" if loaded.is_random else cfg.model.weights
    r = cfg.run
    return EngineSpec(weights=weights, weights_id=loaded.weights_id, head=cfg.model.head,
                      seed=r.seed, device=r.device, precision=r.precision,
                      channels_last=r.channels_last, fuse_bn=r.fuse_bn, compile=r.compile,
                      max_batch=r.max_batch, crop=cfg.dataset.crop,
                      evidence=cfg.evidence_settings() if weights == "evidence" else None)


class _Progress:
    """Turns finished units into records, progress and per-stage statistics."""

    def __init__(self, cfg: Config, run_dir: Path, records: Records, hashes: Hashes,
                 reporter: Reporter, n: int) -> None:
        self.cfg, self.records, self.hashes, self.rep = cfg, records, hashes, reporter
        self.run_dir = run_dir
        self.results: dict[str, list[tuple[Unit, dict[str, Any]]]] = defaultdict(list)
        self.n = n
        self.shown: dict[str, float] = defaultdict(float)

    def share(self, unit: Unit) -> float:
        """The images a unit stands for: a per-method unit is one method's share."""
        return unit.size / len(STAGES[unit.stage].methods(self.cfg))

    def __call__(self, unit: Unit, result: dict[str, Any]) -> None:
        if not result.get("provisional"):  # built from incomplete inputs: build it again
            with disk_errors(self.records.path(unit.key)):
                self.records.mark_done(unit.key, self.hashes[(unit.stage, unit.method)],
                                       **result)
        faults.point(f"{unit.stage}:after-record")
        self.results[unit.stage].append((unit, result))
        # Whole images only: per-method shares (1/M each) would show 5.999 as 5.
        before = round(self.shown[unit.stage], 6)
        self.shown[unit.stage] += self.share(unit)
        step = int(round(self.shown[unit.stage], 6)) - int(before)
        if step:
            self.rep.advance(unit.stage, step)

    def stats(self, planned: dict[str, list[Unit]], pending: dict[str, list[Unit]]
              ) -> list[StageStats]:
        out = []
        for name, stage in stages().items():
            if not planned[name]:
                continue  # turned off under this config
            done = self.results.get(name, [])
            st = StageStats(name, units_total=len(planned[name]), units_run=len(done))
            st.images_run = len({i for u, _ in done for i in range(u.start, u.stop)})
            if done:
                st.seconds = (max(r["ended"] for _, r in done)
                              - min(r["started"] for _, r in done))
                st.busy_seconds = sum(r["ended"] - r["started"] for _, r in done)
                st.workers = sorted({_worker_name(r["worker"]) for _, r in done})
                if stage.device:
                    st.device_idle = _device_idle(done)
            out.append(st)
        return out


def _worker_name(w: dict[str, Any]) -> str:
    return f"{w.get('address')} ({w.get('host')}, {w.get('device')})"


def _device_idle(done: list[tuple[Unit, dict[str, Any]]]) -> float | None:
    """1 - compute / time with work assigned, summed over the workers' devices."""
    by_worker: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _, r in done:
        by_worker[_worker_name(r["worker"])].append(r)
    busy = span = 0.0
    for results in by_worker.values():
        intervals = sorted((r["started"], r["ended"]) for r in results)
        start, end = intervals[0]
        for s, e in intervals[1:]:
            if s > end:
                span += end - start
                start = s
            end = max(end, e)
        span += end - start
        busy += sum(r.get("compute_seconds", 0.0) for r in results)
    return max(0.0, 1.0 - busy / span) if span > 0 else None


def run_pipeline(cfg: Config, *, scheduler: str = "threads", force: str | None = None,
                 reporter: Reporter | None = None, replace: bool = False,
                 only: str | None = None) -> RunSummary:
    """Run (or resume) every stage of ``cfg``; return what happened.

    ``only``: run just this stage on an existing store (``xai evaluate``); every stage it
    reads must be complete and current, else a :class:`StoreError` names the one to run.

    Raises
    ------
    XaiError
        Bad dataset, weights, config, scheduler or lock: all before any work is done.
    """
    from pipeline.model import load_model

    rep = reporter or SilentReporter()
    t_start = time.perf_counter()
    forced = _forced(force)
    d = cfg.dataset
    from pipeline.datasets import build_manifest

    manifest = build_manifest(d.layout, d.root, labels_csv=d.labels_csv, limit=d.limit,
                              per_class=d.per_class, count=d.count, dataset_name=d.name)
    in_process = not (scheduler.startswith("local:") or scheduler == "local-cuda"
                      or "://" in scheduler)
    device = str(resolve_device(cfg.run.device)) if in_process else cfg.run.device
    run_dir = cfg.run_dir
    store_path = run_dir / "store.zarr"
    if only is not None and not (store_path / "zarr.json").is_file():
        raise StoreError(f"Expected a run at {run_dir} to {only}, but there is no store. Run "
                         "`xai run` with the same options first.")
    with RunLock(run_dir), open_executor(scheduler, run_dir, cfg.run.device) as executor:
        # On the CPU, only to learn (and check) the weights' identity before any work.
        loaded = load_model(cfg.model.weights, cfg.model.head, seed=cfg.run.seed,
                            evidence=cfg.evidence_settings()
                            if cfg.model.weights == "evidence" else None,
                            progress=rep.training)
        if loaded.is_random and cfg.model.weights != "random":
            rep.warn(RANDOM_WEIGHTS_WARNING)
        if loaded.note:
            rep.info(loaded.note)
        hashes = stage_hashes(cfg, loaded.weights_id)
        records = Records(run_dir)
        if only is not None and STAGES[only].partial_inputs:
            _check_same_run(only, store_path, hashes)
        if only is not None and not STAGES[only].partial_inputs:
            # before anything is changed: refuse stale inputs untouched
            _check_inputs_current(only, *_plan(cfg, len(manifest), records, hashes),
                                  store_path)
        _prepare_store(cfg, manifest, store_path, records, hashes, forced, rep, replace)
        group = open_store(store_path)
        sync_explainers(group, cfg, records)
        from workflows.evaluate import prepare_arrays

        with disk_errors(store_path):
            prepare_arrays(group, cfg)
        _write_attrs(group, cfg, hashes, loaded, device)
        atomic_write_json(run_dir / "config.resolved.json",
                          {**cfg.to_dict(), "stage_hashes": flat_hashes(hashes),
                           "weights_id": loaded.weights_id, "device": device,
                           "scheduler": scheduler, "package_versions": package_versions()})
        for forced_stage in forced:
            records.clear(forced_stage)
        _purge_stale(records, cfg, hashes)
        n = len(manifest)
        planned = {name: make_units(stage, n, cfg) for name, stage in stages().items()}
        for name, stage in stages().items():
            if stage.remove_stale is not None:
                stage.remove_stale(run_dir, {
                    u.index for u in planned[name]
                    if records.is_done(u.key, hashes[(name, None)])})
        pending = {name: [u for u in units
                          if not records.is_done(u.key, hashes[(u.stage, u.method)])]
                   for name, units in planned.items()}
        if only is not None:
            pending = {name: units if name == only else [] for name, units in pending.items()}
            planned = {name: units if name == only else [] for name, units in planned.items()}
        banner = RANDOM_WEIGHTS_WARNING.split(":")[0] + ": results are meaningless" \
            if loaded.is_random else None
        settings = RunSettings.from_config(cfg, manifest.layout, banner, loaded.classes)
        spec = _engine_spec(cfg, loaded)

        queued = {u for units in pending.values() for u in units}

        def make_task(unit: Unit) -> Task:
            extra = {}
            if STAGES[unit.stage].partial_inputs:  # which of its inputs are not there
                extra["missing"] = sorted({
                    hash_key(d.stage, d.method) for d in dependencies(unit, cfg, n)
                    if d not in queued
                    and not records.is_done(d.key, hashes[(d.stage, d.method)])})
            return Task(unit, str(store_path), str(run_dir), settings,
                        spec if STAGES[unit.stage].device else None, extra)

        progress = _Progress(cfg, run_dir, records, hashes, rep, n)
        for name, units in planned.items():
            if not units:
                continue
            done = sum(progress.share(u) for u in units) - sum(progress.share(u)
                                                               for u in pending[name])
            rep.stage_start(name, n, int(round(done, 6)))
            progress.shown[name] = done
        batches = [[u for units in pending.values() for u in units]] if cfg.run.streaming \
            else list(pending.values())
        with disk_errors(run_dir):
            for batch in batches:
                if batch:
                    run_units(batch, lambda u: dependencies(u, cfg, n), make_task, executor,
                              progress, cfg.method_names)
        for name, units in planned.items():
            if units:
                rep.stage_end(name)
        stats = progress.stats(planned, pending)
        skipped = skipped_images(group, cfg.run.target)
        completeness = completeness_summary(group, cfg.method_names,
                                            cfg.run.completeness_warning)
        evaluation = _write_evaluation(group, cfg, run_dir)
        summary = RunSummary(run_dir=run_dir, store_path=store_path,
                             sheets_dir=run_dir / "sheets", images=n, ok=n - len(skipped),
                             skipped=skipped, weights_id=loaded.weights_id,
                             random_weights=loaded.is_random, device=device,
                             scheduler=scheduler, streaming=cfg.run.streaming, stats=stats,
                             seconds=time.perf_counter() - t_start,
                             completeness=completeness, evaluation=evaluation)
        if planned.get("report"):
            from pipeline.report import recover
            from workflows.report import build_stamp, current_stamp

            recover(run_dir / "report")  # what a killed build left
            stamp = build_stamp(hashes[("report", None)], records, planned["report"])
            if pending["report"] or only == "report" or current_stamp(run_dir) != stamp:
                summary.report = _build_report(group, cfg, run_dir, planned, records, hashes,
                                               summary, only, skipped, evaluation, rep, stamp)
    if only is None or not STAGES[only].partial_inputs:  # a report alone keeps the run's
        atomic_write_json(run_dir / "summary.json", summary.to_dict())
    return summary


def _build_report(group: Any, cfg: Config, run_dir: Path, planned: dict[str, list[Unit]],
                  records: Records, hashes: Hashes, summary: RunSummary, only: str | None,
                  skipped: list[tuple[str, str]], evaluation: dict[str, Any],
                  rep: Reporter, stamp: str) -> dict[str, Any]:
    """The report's folder from its shards' parts (:func:`workflows.report.build_report`)."""
    from workflows.report import build_report, missing_stages, previous_summary

    n = array(group, "image").shape[0]
    everything = {name: make_units(stage, n, cfg) for name, stage in stages().items()}
    missing = missing_stages(cfg, everything, records, hashes)
    facts = summary.to_dict() if only is None else previous_summary(run_dir)
    rep.info("report: clustering the maps and writing the pages")
    skipped = [(i, reason) for i, reason in skipped if reason]  # "": not ingested yet
    return build_report(group, cfg, run_dir, planned["report"], missing, facts, evaluation,
                        skipped, stamp)


# ------------------------------------------------------------------------ status


@dataclass
class StageStatus:
    stage: str
    method: str | None
    done: int
    total: int
    stale: int


@dataclass
class RunStatus:
    run_dir: Path
    exists: bool
    stages: list[StageStatus]
    images: int
    skipped: list[tuple[str, str]]
    notes: list[str]
    completeness: list[Completeness] = field(default_factory=list)
    random_weights: bool = False
    weights_id: str = ""


def run_status(cfg: Config) -> RunStatus:
    """Per stage, and per method for method stages: units done, total, and made stale."""
    run_dir = cfg.run_dir
    store_path = run_dir / "store.zarr"
    if not (store_path / "zarr.json").is_file():
        return RunStatus(run_dir, False, [], 0, [], ["no run yet: `xai run` starts one"])
    group = open_store(store_path, mode="r")
    n = array(group, "image").shape[0]
    hashes = stage_hashes(cfg, expected_weights_id(cfg))
    records = Records(run_dir)
    notes = []
    rows = []
    for name, stage in stages().items():
        units = make_units(stage, n, cfg)
        for method in stage.methods(cfg):
            mine = [u for u in units if u.method == method]
            done = stale = 0
            for u in mine:
                rec = records.get(u.key)
                if rec is None:
                    continue
                if rec.get("hash") == hashes[(name, method)]:
                    done += 1
                else:
                    stale += 1
            rows.append(StageStatus(name, method, done, len(mine), stale))
    first_stale = next((s for s in rows if s.stale), None)
    if first_stale:
        changed = config_changes(group.attrs.get("config", {}), cfg.to_dict())
        why = f" ({'; '.join(changed)})" if changed else ""
        what = first_stale.stage + (f" of {first_stale.method}" if first_stale.method else "")
        notes.append(f"config changed since the last run{why}: {what} and the stages "
                     "after it will be recomputed")
    new = [m for m in cfg.method_names if m not in explainers(group)]
    if new:
        notes.append(f"new methods, computed on the next run (and only they): {', '.join(new)}")
    skipped = [(i, why) for i, why in skipped_images(group, cfg.run.target) if why]
    completeness = completeness_summary(group, [m for m in cfg.method_names
                                                if m in explainers(group)],
                                        cfg.run.completeness_warning)
    return RunStatus(run_dir, True, rows, n, skipped, notes, completeness,
                     bool(group.attrs.get("random_weights", False)),
                     str(group.attrs.get("weights_id", "")))


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for key, value in d.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_changes(old: Any, new: Any) -> list[str]:
    """``key: old -> new`` for every config value that differs (paths and source ignored)."""
    a, b = _flatten(old), _flatten(new)
    skip = ("source", "run.out", "dataset.root")
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and not k.startswith(skip)]


@dataclass
class VerifyReport:
    checked: int
    damaged: list[tuple[str, int, str]]
    repaired: bool


def verify(cfg: Config, repair: bool = True) -> VerifyReport:
    """Re-read every finished unit (store region or sheet) against its record's checksum.

    A deleted or damaged chunk, sheet or record is reported; with ``repair`` its record is
    dropped so that the next ``xai run`` recomputes exactly that unit.
    """
    run_dir = cfg.run_dir
    store_path = run_dir / "store.zarr"
    open_store(store_path, mode="r")  # fail clearly before RunLock creates the run folder
    with RunLock(run_dir):
        group = open_store(store_path, mode="r")
        n = array(group, "image").shape[0]
        hashes = group.attrs.get("stage_hashes", {})
        records = Records(run_dir)
        damaged: list[tuple[str, int, str]] = []
        checked = 0
        for unit in all_units(n, cfg):
            rec = records.get(unit.key)
            if rec is None or rec.get("hash") != hashes.get(hash_key(unit.stage, unit.method)):
                continue
            checked += 1
            try:
                actual = unit_checksum(store_path, run_dir, unit)
            except Exception as exc:  # an unreadable chunk is damage, not a crash
                actual = f"unreadable ({type(exc).__name__})"
            if actual != rec.get("checksum"):
                what = "file missing" if actual == "missing" else (
                    f"data differs from its record ({actual} != {rec.get('checksum')})")
                name = hash_key(unit.stage, unit.method)
                damaged.append((name, unit.index, what))
                if repair:
                    records.path(unit.key).unlink(missing_ok=True)
    return VerifyReport(checked, damaged, repair)


def clean(cfg: Config, stage: str | None = None) -> str:
    """Remove a whole run (``stage=None``) or one stage's records (and the ones after it)."""
    run_dir = cfg.run_dir
    if not run_dir.exists():
        return f"nothing to clean at {run_dir}"
    with RunLock(run_dir):
        if stage is None:
            for child in run_dir.iterdir():
                if child.name != "run.lock":
                    if child.is_dir():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
            return f"removed the run at {run_dir}"
        names = _forced(stage)
        records = Records(run_dir)
        for name in names:
            records.clear(name)
            for folder in stages()[name].output_dirs:
                shutil.rmtree(run_dir / folder, ignore_errors=True)
        return f"cleared {', '.join(names)} at {run_dir}: they are recomputed on the next run"
