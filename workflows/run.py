"""Orchestration of a run: plan shards, skip what is done, run what is not, summarize.

``run_pipeline`` is what ``xai run`` calls; ``run_status`` and ``clean`` back ``xai status``
and ``xai clean``. Nothing here parses arguments or prints: a :class:`Reporter` receives
progress and warnings.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.datasets import Manifest, build_manifest
from pipeline.errors import StoreError
from pipeline.store import array, create_store, ensure_method_arrays, open_store
from workflows.config import Config, stable_hash
from workflows.scheduler import runner
from workflows.stages import (
    STAGES,
    ComputeContext,
    Shard,
    StageStats,
    ingest_shard,
    postprocess_tasks,
    remove_stale_sheets,
    render_sheet,
    run_attribute,
    run_predict,
    stage_units,
)
from workflows.state import Records, RunLock, atomic_write_json, disk_errors, read_json

RANDOM_WEIGHTS_WARNING = (
    "RANDOM WEIGHTS: ImageNet weights were not available, so this run used seeded random "
    "weights. The attributions say nothing about a real model."
)
PACKAGES = ("torch", "torchvision", "captum", "zarr", "dask", "distributed", "numpy", "pillow",
            "matplotlib")


class Reporter(Protocol):
    """Receives progress; the CLI draws it, tests may ignore it."""

    def stage_start(self, stage: str, total_images: int, done_images: int) -> None: ...
    def advance(self, stage: str, images: int) -> None: ...
    def stage_end(self, stage: str) -> None: ...
    def warn(self, message: str) -> None: ...
    def info(self, message: str) -> None: ...


class SilentReporter:
    """A reporter that keeps warnings and drops everything else."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def stage_start(self, stage: str, total_images: int, done_images: int) -> None: ...
    def advance(self, stage: str, images: int) -> None: ...
    def stage_end(self, stage: str) -> None: ...
    def info(self, message: str) -> None: ...

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
    stats: list[StageStats] = field(default_factory=list)
    seconds: float = 0.0


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def resolve_device(spec: str) -> Any:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device."""
    import torch

    from pipeline.errors import ConfigError

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"Expected a CUDA device for --device {spec}, but torch sees none. Use --device cpu "
            "or auto."
        )
    return dev


def expected_weights_id(cfg: Config) -> str:
    """The weights identity a run would use, without loading the model (for status)."""
    from pipeline.model import IMAGENET_WEIGHTS, file_sha256, imagenet_cache_path

    w = cfg.model.weights
    if w == "imagenet" or (w == "auto" and imagenet_cache_path().exists()):
        return f"torchvision:{IMAGENET_WEIGHTS}"
    if w in ("random", "auto"):
        return f"random:seed={cfg.run.seed}"
    path = Path(w)
    return f"file:{path.name}:sha256={file_sha256(path)}" if path.is_file() else f"file:{w}"


def stage_hashes(cfg: Config, weights_id: str) -> dict[str, str]:
    """Per stage, the hash of every config value it depends on, chained through its inputs.

    Changing ``n_steps`` changes ``attribute`` and everything after it; ``ingest`` and
    ``predict`` keep their hashes.
    """
    d = cfg.dataset
    ingest = stable_hash({
        "layout": d.layout, "labels_csv": d.labels_csv, "limit": d.limit,
        "per_class": d.per_class, "count": d.count, "resize": d.resize, "crop": d.crop,
        "max_pixels": d.max_pixels, "shard_size": cfg.run.shard_size,
        "synthetic_seed": cfg.run.seed if d.layout == "synthetic" else None,
    })
    engine = [cfg.run.precision, cfg.run.channels_last, cfg.run.fuse_bn, cfg.run.compile]
    predict = stable_hash([ingest, weights_id, engine])
    attribute = stable_hash([predict, cfg.model.head, {k: dict(v) for k, v in
                                                        cfg.methods.items()},
                             cfg.run.seed])
    aggregate = stable_hash([attribute, "channel-sum"])
    normalize = stable_hash([aggregate, "abs-min-max"])
    render = stable_hash([normalize, cfg.render.images_per_sheet, cfg.render.colormap,
                          cfg.render.dpi])
    return dict(zip(STAGES, (ingest, predict, attribute, aggregate, normalize, render),
                    strict=True))


def _store_matches(store_path: Path, ingest_hash: str, n: int) -> bool:
    try:
        group = open_store(store_path)
        return (group.attrs.get("stage_hashes", {}).get("ingest") == ingest_hash
                and array(group, "image").shape[0] == n)
    except StoreError:
        return False


def _purge_stale(records: Records, stage: str, digest: str) -> None:
    """Drop records made under another config: their data may have been overwritten since."""
    folder = records.root / stage
    if folder.is_dir():
        for rec in folder.glob("*.json"):
            data = read_json(rec)
            if not isinstance(data, dict) or data.get("hash") != digest:
                rec.unlink(missing_ok=True)


def _prepare_store(cfg: Config, manifest: Manifest, store_path: Path, records: Records,
                   hashes: dict[str, str], force: Sequence[str], reporter: Reporter) -> None:
    fresh = "ingest" in force or not _store_matches(store_path, hashes["ingest"], len(manifest))
    if fresh:
        if store_path.exists():
            reporter.info("dataset settings changed or store missing: starting a new store")
        shutil.rmtree(records.root, ignore_errors=True)
        shutil.rmtree(cfg.run_dir / "sheets", ignore_errors=True)
        with disk_errors(store_path):
            create_store(store_path, manifest.ids, manifest.labels, cfg.run.shard_size,
                         cfg.dataset.crop, {"stage_hashes": {"ingest": hashes["ingest"]}})
        return
    group = open_store(store_path)
    stored = list(array(group, "image")[:])  # type: ignore[arg-type]
    if stored != list(manifest.ids):
        reporter.warn(
            f"The dataset folder changed since this store was created ({len(manifest)} images "
            f"now, {len(stored)} in the store). The store keeps its fixed image list; run "
            "`xai clean` or `--force ingest` to start over with the new files."
        )


def _write_attrs(group: Any, cfg: Config, hashes: dict[str, str], loaded: Any,
                 device: str) -> None:
    attrs = {
        "config": cfg.to_dict(),
        "config_hash": stable_hash(cfg.to_dict()),
        "stage_hashes": hashes,
        "package_versions": package_versions(),
        "weights_id": loaded.weights_id,
        "random_weights": bool(loaded.is_random),
        "warning": RANDOM_WEIGHTS_WARNING if loaded.is_random else "",
        "head": cfg.model.head,
        "precision": cfg.run.precision,
        "device": device,
        "preprocessing": {"resize": cfg.dataset.resize, "crop": cfg.dataset.crop,
                          "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    }
    current = dict(group.attrs)
    if any(current.get(k) != v for k, v in attrs.items()):
        group.attrs.update(attrs)


def _forced(force: str | None) -> list[str]:
    if force is None:
        return []
    if force not in STAGES:
        from pipeline.errors import ConfigError

        raise ConfigError(f"Expected --force to name a stage ({', '.join(STAGES)}), got {force!r}.")
    return list(STAGES[STAGES.index(force):])


def run_pipeline(cfg: Config, *, scheduler: str = "threads", force: str | None = None,
                 reporter: Reporter | None = None) -> RunSummary:
    """Run (or resume) every stage of ``cfg``; return what happened.

    Raises
    ------
    XaiError
        Bad dataset, weights, config or lock: all before any work is done.
    """
    from pipeline.model import load_model
    from pipeline.planner import plan_max_batch

    rep = reporter or SilentReporter()
    t_start = time.perf_counter()
    forced = _forced(force)
    d = cfg.dataset
    manifest = build_manifest(d.layout, d.root, labels_csv=d.labels_csv, limit=d.limit,
                              per_class=d.per_class, count=d.count, dataset_name=d.name)
    device = resolve_device(cfg.run.device)
    run_dir = cfg.run_dir
    store_path = run_dir / "store.zarr"
    with RunLock(run_dir), runner(scheduler) as sched:
        loaded = _engine(load_model(cfg.model.weights, cfg.model.head, seed=cfg.run.seed,
                                    device=device), cfg, device)
        if loaded.is_random and cfg.model.weights != "random":
            rep.warn(RANDOM_WEIGHTS_WARNING)
        hashes = stage_hashes(cfg, loaded.weights_id)
        records = Records(run_dir)
        _prepare_store(cfg, manifest, store_path, records, hashes, forced, rep)
        group = open_store(store_path)
        if ensure_method_arrays(group, cfg.method_names, cfg.run.shard_size, d.crop):
            for stage in ("attribute", "aggregate", "normalize"):
                records.clear(stage)
        _write_attrs(group, cfg, hashes, loaded, str(device))
        atomic_write_json(run_dir / "config.resolved.json",
                          {**cfg.to_dict(), "stage_hashes": hashes,
                           "weights_id": loaded.weights_id, "device": str(device),
                           "package_versions": package_versions()})
        for stage in forced:
            records.clear(stage)
        n = len(manifest)
        max_batch = cfg.run.max_batch or plan_max_batch(
            loaded.model, (3, d.crop, d.crop), device)
        ctx = ComputeContext(store_path=store_path, run_dir=run_dir, loaded=loaded,
                             device=device, precision=cfg.run.precision, max_batch=max_batch,
                             methods={k: dict(v) for k, v in cfg.methods.items()},
                             run_seed=cfg.run.seed)
        banner = RANDOM_WEIGHTS_WARNING.split(":")[0] + ": results are meaningless" \
            if loaded.is_random else None
        stats = []
        for stage in STAGES:
            units = stage_units(stage, n, cfg.run.shard_size, cfg.render.images_per_sheet)
            _purge_stale(records, stage, hashes[stage])
            if stage == "render":
                remove_stale_sheets(run_dir, {u.index for u in units
                                              if records.is_done("render", u.index,
                                                                 hashes["render"])})
            pending = [u for u in units if not records.is_done(stage, u.index, hashes[stage])]
            st = StageStats(stage, shards_total=len(units), shards_run=len(pending),
                            images_run=sum(u.size for u in pending))
            rep.stage_start(stage, n, n - st.images_run)
            t0 = time.perf_counter()
            st.wait_seconds = _execute(stage, pending, cfg, manifest, ctx, sched, rep,
                                       hashes[stage], banner)
            st.seconds = time.perf_counter() - t0
            rep.stage_end(stage)
            stats.append(st)
        status = np.asarray(array(group, "status")[:], dtype=object)
        ids = array(group, "image")[:]
    skipped = [(str(ids[i]), str(status[i])) for i in range(n) if status[i] != "ok"]
    return RunSummary(run_dir=run_dir, store_path=store_path, sheets_dir=run_dir / "sheets",
                      images=n, ok=n - len(skipped), skipped=skipped,
                      weights_id=loaded.weights_id, random_weights=loaded.is_random,
                      device=str(device), stats=stats, seconds=time.perf_counter() - t_start)


def _execute(stage: str, pending: list[Shard], cfg: Config, manifest: Manifest,
             ctx: ComputeContext, sched: Any, rep: Reporter, digest: str,
             banner: str | None) -> float:
    """Run one stage's pending units; return the seconds the device waited (if it computes)."""
    if not pending:
        return 0.0

    def on_task(k: int) -> None:
        rep.advance(stage, pending[k].size)

    if stage in ("predict", "attribute"):
        fn = run_predict if stage == "predict" else run_attribute
        return fn(ctx, pending, digest, lambda u: rep.advance(stage, u.size),
                  prefetch=cfg.run.prefetch)
    with disk_errors(ctx.run_dir):
        _execute_tasks(stage, pending, cfg, manifest, ctx, sched, on_task, digest, banner)
    return 0.0


def _execute_tasks(stage: str, pending: list[Shard], cfg: Config, manifest: Manifest,
                   ctx: ComputeContext, sched: Any, on_task: Any, digest: str,
                   banner: str | None) -> None:
    from pipeline.model import class_names

    d = cfg.dataset
    store, run_dir = str(ctx.store_path), str(ctx.run_dir)
    if stage == "ingest":
        tasks = [_delayed(ingest_shard, store, run_dir, u, str(d.root) if d.root else None,
                          manifest.layout, d.resize, d.crop, d.max_pixels, cfg.run.seed, digest)
                 for u in pending]
        sched.run(tasks, on_task)
    elif stage in ("aggregate", "normalize"):
        sched.run(postprocess_tasks(stage, ctx.store_path, ctx.run_dir, pending, digest), on_task)
    else:
        names = list(class_names())
        tasks = [_delayed(render_sheet, store, run_dir, u, list(cfg.method_names), names,
                          cfg.render.colormap, cfg.render.dpi, banner, digest) for u in pending]
        # matplotlib is not thread-safe: sheets render in processes, or inline when only one.
        sched.run(tasks, on_task,
                  local_override="synchronous" if len(tasks) <= 1 else "processes")


def _engine(loaded: Any, cfg: Config, device: Any) -> Any:
    """The loaded model with the run's speed options (channels_last, BN folding, compile)."""
    import dataclasses

    from pipeline.accel import optimize

    opts = {"channels_last": cfg.run.channels_last, "fuse_bn": cfg.run.fuse_bn,
            "compile": cfg.run.compile}
    model = optimize(loaded.model, device, **opts)
    # With the logits head they are one network: copy (and compile) it once.
    backbone = model if loaded.backbone is loaded.model else optimize(loaded.backbone, device,
                                                                      **opts)
    return dataclasses.replace(loaded, model=model, backbone=backbone)


def _delayed(fn: Any, *args: Any) -> Any:
    from dask import delayed

    return delayed(fn, pure=False)(*args)


@dataclass
class StageStatus:
    stage: str
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


def run_status(cfg: Config) -> RunStatus:
    """Per stage: units done under the current config, total, and records made stale."""
    run_dir = cfg.run_dir
    store_path = run_dir / "store.zarr"
    if not (store_path / "zarr.json").is_file():
        return RunStatus(run_dir, False, [], 0, [], ["no run yet: `xai run` starts one"])
    group = open_store(store_path, mode="r")
    n = array(group, "image").shape[0]
    hashes = stage_hashes(cfg, expected_weights_id(cfg))
    records = Records(run_dir)
    notes = []
    stages = []
    for stage in STAGES:
        units = stage_units(stage, n, cfg.run.shard_size, cfg.render.images_per_sheet)
        done = stale = 0
        for u in units:
            rec = records.get(stage, u.index)
            if rec is None:
                continue
            if rec.get("hash") == hashes[stage]:
                done += 1
            else:
                stale += 1
        stages.append(StageStatus(stage, done, len(units), stale))
    first_stale = next((s.stage for s in stages if s.stale), None)
    if first_stale:
        changed = config_changes(group.attrs.get("config", {}), cfg.to_dict())
        why = f" ({'; '.join(changed)})" if changed else ""
        notes.append(f"config changed since the last run{why}: {first_stale} and the stages "
                     "after it will be recomputed")
    status = np.asarray(array(group, "status")[:], dtype=object)
    ids = array(group, "image")[:]
    skipped = [(str(ids[i]), str(status[i])) for i in range(n) if status[i] not in ("ok", "")]
    return RunStatus(run_dir, True, stages, n, skipped, notes)


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
    """Re-read every finished shard and sheet and compare it with its record's checksum.

    A deleted or damaged chunk, sheet or record is reported; with ``repair`` its record is
    dropped so that the next ``xai run`` recomputes exactly that shard of that stage.
    """
    from workflows.stages import file_checksum, region_checksum, sheet_path

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
        for stage in STAGES:
            units = stage_units(stage, n, cfg.run.shard_size, cfg.render.images_per_sheet)
            for u in units:
                rec = records.get(stage, u.index)
                if rec is None or rec.get("hash") != hashes.get(stage):
                    continue
                checked += 1
                try:
                    if stage == "render":
                        path = sheet_path(run_dir, u.index)
                        actual = file_checksum(path) if path.is_file() else "missing"
                    else:
                        actual = region_checksum(store_path, stage, u)
                except Exception as exc:  # an unreadable chunk is damage, not a crash
                    actual = f"unreadable ({type(exc).__name__})"
                if actual != rec.get("checksum"):
                    what = "sheet missing" if actual == "missing" else (
                        f"data differs from its record ({actual} != {rec.get('checksum')})")
                    damaged.append((stage, u.index, what))
                    if repair:
                        records.path(stage, u.index).unlink(missing_ok=True)
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
        stages = _forced(stage)
        records = Records(run_dir)
        for s in stages:
            records.clear(s)
        if "render" in stages:
            shutil.rmtree(run_dir / "sheets", ignore_errors=True)
        return f"cleared {', '.join(stages)} at {run_dir}: they are recomputed on the next run"
