"""A run: plan the units, skip what is done, stream the rest, let each stage finish, summarize.

:func:`run_pipeline` is what ``xai run`` (and ``xai evaluate``, ``xai report``: one stage) calls.
It loops over the stage registry's hooks and names no stage: the store's lifecycle is
:mod:`workflows.runner.store_lifecycle`, the stages' own work :mod:`workflows.stages`,
streaming :mod:`workflows.runner.coordinator`, the summary :mod:`workflows.runner.run_summary`.
Nothing here parses arguments or prints: a :class:`~workflows.runner.run_summary.Reporter`
receives progress and warnings.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, LockError, StoreError
from pipeline.store.access import open_store
from workflows.config.run_config import Config
from workflows.config.sections import GENERATED_LAYOUTS
from workflows.runner import store_lifecycle as lifecycle
from workflows.runner.completion_records import Records
from workflows.runner.coordinator import Stop, run_units
from workflows.runner.disk_writes import atomic_write_json, disk_errors, read_json
from workflows.runner.executors import Executor, open_executor
from workflows.runner.run_lock import RunLock
from workflows.runner.run_summary import (
    Recorder,
    Reporter,
    RunSummary,
    SilentReporter,
    completeness_summary,
    degeneracy_summary,
    process_seconds,
    skipped_images,
    top1_accuracy,
)
from workflows.runner.stage_api import Context, Task, Unit
from workflows.runner.stage_registry import Hashes, Plan, StageRegistry, flat_hashes, hash_key
from workflows.runner.worker import ModelSpec, resolve_device

#: Kept for the CLI and tests: the warning of a run with random weights.
RANDOM_WEIGHTS_WARNING = lifecycle.RANDOM_WEIGHTS_WARNING


def run_pipeline(cfg: Config, *, registry: StageRegistry, scheduler: str = "threads",
                 force: str | None = None, reporter: Reporter | None = None,
                 replace: bool = False, only: str | None = None,
                 stop: Stop | None = None) -> RunSummary:
    """Run (or resume) every stage of ``registry`` (the project's:
    :data:`workflows.stages.REGISTRY`) on ``cfg``; return what happened.

    ``only``: run just this stage on an existing store (``xai evaluate``); every stage it
    reads must be complete and current, else a :class:`StoreError` names the one to run.
    ``stop``: requested (by the first Ctrl-C), the running tasks finish and are recorded and
    :class:`~workflows.runner.coordinator.RunStopped` is raised.

    A run that stops before writing anything (a refusal) leaves no ``run.lock`` and no
    folder it made.

    Raises
    ------
    XaiError
        Bad dataset, weights, config, scheduler or lock: all before any work is done.
    """
    with _nothing_left_if_refused(cfg.run_dir):
        return _run_pipeline(cfg, registry=registry, scheduler=scheduler, force=force,
                             reporter=reporter, replace=replace, only=only, stop=stop)


@contextlib.contextmanager
def _nothing_left_if_refused(run_dir: Path) -> Iterator[None]:
    """On an error, remove what the run made in ``run_dir`` when it wrote nothing else there:
    the lock file (if it was not there before) and the folders that did not exist (each only
    when empty).

    The removal holds the lock, so that a run that took the folder meanwhile keeps it; a
    folder holding anything new keeps everything (the lock file left is harmless).
    """
    missing: list[Path] = []  # deepest first
    folder = Path(run_dir)
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    lock = RunLock(run_dir)
    made_lock = not lock.path.exists()
    before = set() if missing or not Path(run_dir).is_dir() else set(os.listdir(run_dir))
    try:
        yield
    except BaseException:
        if made_lock and lock.path.exists():
            with contextlib.suppress(OSError, LockError):
                _remove_unused(lock, missing, before)
        raise


def _remove_unused(lock: RunLock, missing: list[Path], before: set[str]) -> None:
    """Under ``lock``: remove its file and the ``missing`` folders, when the run folder holds
    no name but the lock's beyond ``before``."""
    lock.acquire()
    try:
        if set(os.listdir(lock.path.parent)) - {lock.path.name} != before:
            return
        lock.path.unlink()
        for folder in missing:
            if any(folder.iterdir()):
                return
            folder.rmdir()
    finally:
        lock.release()


def _run_pipeline(cfg: Config, *, registry: StageRegistry, scheduler: str,
                  force: str | None, reporter: Reporter | None, replace: bool,
                  only: str | None, stop: Stop | None) -> RunSummary:
    """:func:`run_pipeline`'s work, under its clean-up of a refused run."""
    reg = registry
    rep = reporter or SilentReporter()
    forced = reg.through(force, "--force") if force is not None else ()
    _check_dataset(cfg)
    if not forced and only is None:
        with RunLock(cfg.run_dir):
            quick = _nothing_to_do(reg, cfg, rep, scheduler)
        if quick is not None:
            return quick
    device = _device(cfg, scheduler)
    store_path = cfg.run_dir / "store.zarr"
    if only is not None:
        _check_stage(reg, only, cfg, store_path)
    requested = lifecycle.requested_key(cfg)
    with RunLock(cfg.run_dir), open_executor(scheduler, cfg.run_dir, cfg.run.device) as pool:
        # A CPU stage run alone (xai report) computes nothing with the model: no warning.
        quiet = only is not None and not reg[only].device
        loaded = _load_weights(cfg, SilentReporter() if quiet else rep)
        cfg = lifecycle.resolve_methods(cfg, loaded)
        manifest = _manifest(cfg, loaded.classes)
        rep.info(f"layout: {manifest.describe()}")
        hashes = reg.hashes(cfg, loaded.weights_id)
        records = Records(cfg.run_dir)
        n = len(manifest)
        if only is not None:  # before anything is changed: refuse stale inputs untouched
            _check_inputs(reg, only, cfg, store_path, records, hashes, n)
        lifecycle.prepare_store(reg, cfg, manifest, store_path, records, hashes, forced, rep,
                                replace)
        group = open_store(store_path)
        lifecycle.sync_explainers(reg, group, cfg, records)
        lifecycle.write_attrs(group, cfg, hashes, loaded, device)
        lifecycle.prepare_arrays(reg, group, cfg)
        lifecycle.write_resolved_config(cfg, hashes, loaded.weights_id, device, scheduler,
                                        requested)
        plan = _plan(reg, cfg, n, records, hashes, forced)
        if only is not None:
            plan = plan.only(only)
        recorder = Recorder(reg, cfg, records, hashes, rep)
        recorder.start(plan.planned, plan.pending, n)
        _execute(reg, cfg, plan, records, pool, recorder, _model_spec(cfg, loaded), n, stop)
        recorder.end(plan.planned)
        return _summarize(reg, cfg, group, store_path, n, loaded.weights_id, loaded.is_random,
                          device, scheduler, recorder, plan, only, rep, records, hashes,
                          manifest)


def _summarize(reg: StageRegistry, cfg: Config, group: Any, store_path: Path, n: int,
               weights_id: str, random_weights: bool, device: str, scheduler: str,
               recorder: Recorder, plan: Plan, only: str | None, rep: Reporter,
               records: Records, hashes: Hashes, manifest: Any) -> RunSummary:
    """The run's summary, after each stage's ``finalize``; written to ``summary.json``
    (``manifest``: the run's images, for its layout and labelled count)."""
    skipped = skipped_images(group, cfg.run.target)
    summary = RunSummary(
        run_dir=cfg.run_dir, store_path=store_path, sheets_dir=cfg.run_dir / "sheets",
        images=n, ok=n - len(skipped), skipped=skipped, weights_id=weights_id,
        random_weights=random_weights, device=device, scheduler=scheduler,
        streaming=cfg.run.streaming, stats=recorder.stats(plan.planned),
        previous=read_json(cfg.run_dir / "summary.json"),
        completeness=completeness_summary(group, cfg.method_names,
                                          cfg.run.completeness_warning),
        engine=_engine(recorder.engine(plan.planned), cfg), accuracy=top1_accuracy(group),
        layout=manifest.layout, labelled=manifest.labelled,
        degenerate=degeneracy_summary(group, store_path, cfg.method_names))
    ctx = Context(cfg, group, cfg.run_dir, records, hashes, reg, plan.planned,
                  plan.pending, only, summary, {}, rep)
    for stage in reg:
        if stage.enabled(cfg) and (out := stage.finalize(ctx)) is not None:
            ctx.outputs[stage.name] = out
    summary.outputs = ctx.outputs
    summary.seconds = process_seconds()  # the whole command, as a user's clock says
    if only is None or not reg[only].partial_inputs:  # a stage built alone keeps the run's
        atomic_write_json(cfg.run_dir / "summary.json", summary.to_dict())
    return summary


def _engine(facts: dict[str, str], cfg: Config) -> dict[str, str]:
    """The engine facts, the model named as the console names it: an exported program is
    not the ``[model] arch`` its workers were given."""
    from pipeline.models.sources import model_label

    if "arch" in facts:
        facts = {**facts, "arch": model_label(cfg.model.arch, str(cfg.model.weights))}
    return facts


def _nothing_to_do(reg: StageRegistry, cfg: Config, rep: Reporter, scheduler: str
                   ) -> RunSummary | None:
    """A rerun's summary when every record is current, found without loading the model (so
    without importing torch): the config is the one the last run resolved, the weights'
    identity (a file's hash, the cache's checkpoint) is unchanged, and the images are the
    store's. None when anything is left to do or cannot be known this way."""
    import dataclasses

    from workflows.runner.store_lifecycle import expected_weights_id, requested_key

    prev = read_json(cfg.run_dir / "config.resolved.json")
    store_path = cfg.run_dir / "store.zarr"
    if not isinstance(prev, dict) or prev.get("requested") != requested_key(cfg) \
            or not (store_path / "zarr.json").is_file():
        return None
    weights_id = expected_weights_id(cfg)
    if weights_id != prev.get("weights_id"):
        return None
    device = str(prev.get("device") or cfg.run.device)  # nothing runs: the last run's
    resolved = dataclasses.replace(cfg, methods=prev.get("methods") or {})
    hashes = reg.hashes(resolved, weights_id)
    if flat_hashes(hashes) != prev.get("stage_hashes"):
        return None
    group = open_store(store_path)  # the finalize hooks may still write (a report rebuilt)
    classes = tuple(group.attrs.get("classes") or ())
    manifest = _manifest(cfg, classes or None)
    stored = [str(i) for i in group["image"][:].tolist()] if "image" in group else []
    if list(manifest.ids) != stored:
        return None
    # Labels that changed under the same files take the full path, which says so.
    if "label" in group and group["label"][:].tolist() != list(manifest.labels):
        return None
    records = Records(cfg.run_dir)
    plan = Plan.make(reg, resolved, len(manifest), records, hashes)
    if any(plan.pending.values()):
        return None
    recorder = Recorder(reg, resolved, records, hashes, rep)
    recorder.start(plan.planned, plan.pending, len(manifest))
    recorder.end(plan.planned)
    random_weights = bool(group.attrs.get("random_weights", False))
    if random_weights and cfg.model.weights != "random":
        from pipeline.models.sources import fallback_hint

        rep.warn(RANDOM_WEIGHTS_WARNING)
        if hint := fallback_hint(cfg.model.arch, cfg.model.weights):
            rep.info(hint)
    rep.info(f"layout: {manifest.describe()}")
    return _summarize(reg, resolved, group, store_path, len(manifest), weights_id,
                      random_weights, device, scheduler, recorder, plan, None, rep, records,
                      hashes, manifest)


def _check_dataset(cfg: Config) -> None:
    """The dataset's folder exists and, where the model's classes are known without
    loading it, each class folder or CSV label is one of them (before anything is made)."""
    from pipeline.data.layouts import check_has_images, check_labels, check_root

    d = cfg.dataset
    if d.layout not in GENERATED_LAYOUTS:
        check_root(d.root, d.name)
        if d.root is not None:
            check_has_images(d.root, d.layout)
        classes = _classes_before_loading(cfg)
        if classes is not None and d.root is not None:
            check_labels(d.layout, d.root, labels_csv=d.labels_csv, classes=classes)


def _classes_before_loading(cfg: Config) -> tuple[str, ...] | None:
    """The model's class names where the config alone fixes them: ImageNet-1k's for an
    architecture family's ``imagenet``, ``auto`` or ``random`` weights (their classifiers
    are ImageNet-1k's), the ``[model] classes`` file for a weights file; None when only the
    loaded model tells (a weights file without one, a source with its own classes), and
    the manifest is checked once it has loaded."""
    from pipeline.data.class_names import imagenet_classes, read_classes_file
    from pipeline.errors import XaiError
    from pipeline.models.sources import source_for
    from pipeline.models.sources.base import ArchitectureFamily

    m = cfg.model
    try:
        source = source_for(m.arch, str(m.weights))
    except XaiError:  # a bad arch or weights: loading says so, as it always has
        return None
    if isinstance(source, ArchitectureFamily):
        return imagenet_classes()
    if (carried := source.known_classes(str(m.weights))) is not None and m.classes is None:
        return carried
    if source.names_weights(str(m.weights)) or m.classes is None:
        return None
    return read_classes_file(m.classes)


def _manifest(cfg: Config, classes: tuple[str, ...]) -> Any:
    """The fixed image list; labels are indices of the model's ``classes``."""
    from pipeline.data.layouts import build_manifest

    d = cfg.dataset
    return build_manifest(d.layout, d.root, labels_csv=d.labels_csv, limit=d.limit,
                          per_class=d.per_class, count=d.count, dataset_name=d.name,
                          classes=classes)


def _device(cfg: Config, scheduler: str) -> str:
    """The device in words: resolved here for in-process schedulers, else as requested (each
    worker resolves its own)."""
    in_process = not (scheduler.startswith("local:") or scheduler == "local-cuda"
                      or "://" in scheduler)
    return str(resolve_device(cfg.run.device)) if in_process else cfg.run.device


def _load_weights(cfg: Config, rep: Reporter) -> Any:
    """The model on the CPU, only to learn (and check) the weights' identity and classes
    before any work; ``auto`` falling back to random weights is announced."""
    from pipeline.data.layouts import class_folders
    from pipeline.models.classifier import load_model

    m, d = cfg.model, cfg.dataset
    folders = class_folders(d.root) if d.layout in ("auto", "class-folders") and d.root \
        else ()
    loaded = load_model(m.weights, m.head, seed=cfg.run.seed,
                        evidence=cfg.training_settings(),
                        progress=rep.training, arch=m.arch, classes=m.classes,
                        dataset_classes=folders, preprocessing=cfg.preprocessing())
    if loaded.is_random and m.weights != "random":
        rep.warn(RANDOM_WEIGHTS_WARNING)
    if loaded.note:
        rep.info(loaded.note)
    for message in loaded.warnings:
        rep.warn(message)
    return loaded


def _model_spec(cfg: Config, loaded: Any) -> ModelSpec:
    # Workers load exactly what the coordinator resolved: `auto` that fell back to random
    # weights stays random on every worker.
    weights = "random" if loaded.is_random else cfg.model.weights
    r = cfg.run
    return ModelSpec(weights=weights, weights_id=loaded.weights_id, head=cfg.model.head,
                     seed=r.seed, device=r.device, precision=r.precision,
                     channels_last=r.channels_last, fuse_bn=r.fuse_bn, compile=r.compile,
                     max_batch=r.max_batch, crop=cfg.dataset.crop,
                     evidence=None if loaded.is_random else cfg.training_settings(),
                     arch=cfg.model.arch, classes=tuple(loaded.classes),
                     preprocessing=cfg.preprocessing())


def _plan(reg: StageRegistry, cfg: Config, n: int, records: Records, hashes: Hashes,
          forced: tuple[str, ...]) -> Plan:
    """Forget forced and stale records, remove the files of units without a record, and plan
    what is left to do."""
    for name in forced:
        records.clear(name)
    lifecycle.purge_stale(reg, records, cfg, hashes)
    plan = Plan.make(reg, cfg, n, records, hashes)
    for stage in reg:
        todo = set(plan.pending[stage.name])
        stage.remove_stale(cfg.run_dir, {u.index for u in plan.planned[stage.name]
                                         if u not in todo})
    return plan


def _execute(reg: StageRegistry, cfg: Config, plan: Plan, records: Records, executor: Executor,
             recorder: Recorder, spec: ModelSpec, n: int, stop: Stop | None = None) -> None:
    """Submit every pending unit (streaming, or one stage after another) and record each as
    it returns."""
    queued = set(plan.queue())
    store_path, run_dir = cfg.run_dir / "store.zarr", cfg.run_dir

    def make_task(unit: Unit) -> Task:
        stage = reg[unit.stage]
        extra = {}
        if stage.partial_inputs:  # which of its inputs are not there
            extra["missing"] = sorted({
                hash_key(d.stage, d.method) for d in reg.dependencies(unit, cfg, n)
                if d not in queued and not records.is_done(d.key, plan.hashes[(d.stage,
                                                                               d.method)])})
        return Task(unit, stage, str(store_path), str(run_dir), cfg, stage.resources(),
                    spec if stage.device else None, extra)

    batches = [plan.queue()] if cfg.run.streaming else list(plan.pending.values())
    with disk_errors(run_dir):
        for batch in batches:
            if batch:
                run_units(batch, lambda u: reg.dependencies(u, cfg, n), make_task, executor,
                          recorder, lambda u: reg.priority(u, cfg.method_names), stop)


# ------------------------------------------------------------------------ one stage alone


def _check_stage(reg: StageRegistry, only: str, cfg: Config, store_path: Path) -> None:
    if only not in reg:
        raise ConfigError(f"Expected a stage in {', '.join(reg.names())}, got {only!r}.")
    stage = reg[only]
    if not stage.methods(cfg):
        hint = f" ({stage.how_to_enable})" if stage.how_to_enable else ""
        raise ConfigError(f"Expected the {only} stage to be on under this config, but it is "
                          f"off{hint}.")
    if not (store_path / "zarr.json").is_file():
        raise StoreError(f"Expected a run at {store_path.parent} to {only}, but there is no "
                         "store. Run `xai run` with the same options first.")


def _check_inputs(reg: StageRegistry, only: str, cfg: Config, store_path: Path, records: Records,
                  hashes: Hashes, n: int) -> None:
    """A stage built from what is there (the report) refuses a config that changes the run;
    any other stage needs every stage it reads from complete and current."""
    if reg[only].partial_inputs:
        _check_same_run(only, store_path, hashes)
        return
    plan = Plan.make(reg, cfg, n, records, hashes)
    for name in [s for s in reg.names() if s in reg.upstream(only)]:  # name the first one
        missing = plan.pending.get(name, [])
        if missing:
            methods = sorted({u.method for u in missing if u.method})
            what = f" of {', '.join(methods)}" if methods else ""
            raise StoreError(
                f"Expected the {name} stage{what} to be complete and current in "
                f"{store_path} before {only}, got {len(missing)} of {len(plan.planned[name])} "
                f"units missing or stale. Run `xai run` with the same options first (it runs "
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
