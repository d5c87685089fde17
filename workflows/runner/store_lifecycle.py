"""The store's lifecycle: create it, keep the matching one, refuse or replace one made with
other settings, keep its explainer axis in step with the methods, let the stages create
their arrays, and record what the run used (attributes, ``config.resolved.json``).

A store's identity is the hash of the first stage (the one that fills it from the files):
dataset settings and ``shard_size`` changes need a new store; everything else is per stage.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError, StoreError
from pipeline.store.access import create_store, explainers, open_store, schema_problem
from pipeline.store.arrays import array
from pipeline.store.axes import copy_slot, resize_explainers, write_classes
from workflows.config.hashing import stable_hash
from workflows.config.run_config import Config
from workflows.runner import fault_injection as faults
from workflows.runner.completion_records import Records
from workflows.runner.disk_writes import atomic_write_bytes, atomic_write_json, disk_errors
from workflows.runner.run_summary import Reporter
from workflows.runner.stage_registry import Hashes, StageRegistry, flat_hashes, hash_key

if TYPE_CHECKING:  # torch-free import for `xai status`: datasets load torchvision
    from pipeline.data.layouts import Manifest

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
#: The config keys that define a store's image axis: a change needs a new store.
STORE_KEYS = ("dataset.", "run.shard_size", "store.")


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
    from pipeline.models.sources import weights_identity

    settings = cfg.training_settings()
    key = settings.key() if settings is not None else ""
    return weights_identity(cfg.model.weights, cfg.run.seed, key, cfg.model.arch)


def config_changes(old: Any, new: Any) -> list[str]:
    """``key: old -> new`` for every config value that differs (paths and source ignored)."""
    a, b = _flatten(old), _flatten(new)
    skip = ("source", "run.out", "dataset.root")
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and not k.startswith(skip)]


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for key, value in d.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


# ------------------------------------------------------------------------ create or keep


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


def _store_matches(store_path: Path, first: str, identity: str, n: int) -> bool:
    try:
        group = open_store(store_path)
        return (group.attrs.get("stage_hashes", {}).get(first) == identity
                and array(group, "image").shape[0] == n)
    except StoreError:
        return False


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


def _replace_store(registry: StageRegistry, cfg: Config, manifest: Manifest, store_path: Path,
                   records: Records, first: str, identity: str) -> None:
    """Build the new store beside the old one, then swap them; the old one is removed last.

    A kill at any point leaves a readable store: the old one until the swap, the new one
    after it (an interrupted swap is finished by :func:`_finish_swap` on the next run).
    """
    new, old = store_path.with_name(store_path.name + ".new"), \
        store_path.with_name(store_path.name + ".old")
    shutil.rmtree(new, ignore_errors=True)
    with disk_errors(store_path):
        create_store(new, manifest.ids, manifest.labels, cfg.run.shard_size,
                     {"stage_hashes": {first: identity},
                      **cfg.store_choices()}, schema=registry.schema)
    faults.point("replace:new-created")
    shutil.rmtree(records.root, ignore_errors=True)
    for stage in registry:
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


def prepare_store(registry: StageRegistry, cfg: Config, manifest: Manifest, store_path: Path,
                  records: Records, hashes: Hashes, force: Sequence[str], reporter: Reporter,
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
    first = registry.names()[0]
    identity = hashes[(first, None)]
    if not store_path.exists():
        _replace_store(registry, cfg, manifest, store_path, records, first, identity)
        return
    if first in force or not _store_matches(store_path, first, identity, len(manifest)):
        if not (replace or first in force):
            changes = _store_differences(store_path, cfg, len(manifest))
            raise StoreError(
                f"Expected the settings of the existing store at {store_path}, got "
                f"different ones: {'; '.join(changes)}. Nothing was changed. To keep it, "
                "write the new run elsewhere with --out DIR; to discard it and start over, "
                "add --replace."
            )
        reporter.info(f"replacing the store at {store_path} (--replace)")
        _replace_store(registry, cfg, manifest, store_path, records, first, identity)
        return
    group = open_store(store_path)
    stored = array(group, "image")[:].tolist()  # type: ignore[union-attr]
    if stored != list(manifest.ids):
        reporter.warn(
            f"The dataset folder changed since this store was created ({len(manifest)} images "
            f"now, {len(stored)} in the store). The store keeps its fixed image list; run "
            "`xai clean` or `--force ingest` to start over with the new files."
        )
        return
    # Same files, other labels (a folder renamed into a class, a CSV edited, a layout found
    # differently): the stored labels, the accuracy and every label-targeted map would be
    # the old ones, so say so rather than show them as current.
    labels = array(group, "label")[:].tolist()  # type: ignore[union-attr]
    changed = sum(a != b for a, b in zip(labels, manifest.labels, strict=True))
    if changed:
        reporter.warn(
            f"The labels found in the dataset differ from the store's for {changed} of "
            f"{len(labels)} images (layout: {manifest.layout}). The store keeps the labels it "
            "was made with; run with `--force ingest` to take the new ones.")


# ------------------------------------------------------------------------ the methods


def sync_explainers(registry: StageRegistry, group: Any, cfg: Config, records: Records
                    ) -> list[str]:
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
    if order == stored:
        return []
    added = [m for m in wanted if m not in stored]
    removed = [m for m in stored if m not in wanted]
    moved = [m for m in kept if stored.index(m) != order.index(m)]
    folders = {m: [hash_key(s.name, m) for s in registry if s.per_method]
               for m in added + removed + moved}
    saved = {k: rec for m in moved for f in folders[m]
             for k, rec in records.entries(f).items()}
    for m in added + removed + moved:
        for folder in folders[m]:
            records.clear(folder)
    with disk_errors(cfg.run_dir / "store.zarr"):
        for m in moved:  # in slot order: a slot is overwritten only after it was copied
            copy_slot(group, stored.index(m), order.index(m), cfg.run.shard_size,
                      registry.schema)
        resize_explainers(group, order, registry.schema)
    records.put_all(saved)
    return added


def prepare_arrays(registry: StageRegistry, group: Any, cfg: Config) -> None:
    """Every stage's ``prepare`` hook: the arrays of the stages that are on, created from the
    schema (existing ones are kept), those of the stages that are off dropped."""
    with disk_errors(cfg.run_dir / "store.zarr"):
        for stage in registry:
            stage.prepare(group, cfg)


def purge_stale(registry: StageRegistry, records: Records, cfg: Config, hashes: Hashes) -> None:
    """Drop records made under another config: their data may be overwritten since."""
    for stage in registry:
        for method in stage.methods(cfg):
            digest = hashes[(stage.name, method)]
            stale = [key for key, rec in records.entries(hash_key(stage.name, method)).items()
                     if rec.get("hash") != digest]
            if stale:
                records.drop(*stale)


# ------------------------------------------------------------------------ what it used


def baseline_descriptions(cfg: Config) -> dict[str, str]:
    """Per configured IG method, the baseline its paths start from, in words."""
    from pipeline.attribution.baselines import describe
    from pipeline.attribution.method_registry import METHODS

    return {m: describe(p) for m, p in cfg.methods.items()
            if m in METHODS and "baseline" in METHODS[m].params}


def write_attrs(group: Any, cfg: Config, hashes: Hashes, loaded: Any, device: str) -> None:
    """The store's root attributes: what the run used (only rewritten when they change)."""
    from pipeline.models.sources import recorded_arch

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
        "arch": recorded_arch(cfg.model.arch, cfg.model.weights),
        "preprocessing": cfg.preprocessing().to_dict(),
        "noise": NOISE_NOTE,
        "target": cfg.run.target,
        "baselines": baseline_descriptions(cfg),
        "classes": list(loaded.classes),
        "model_report": loaded.report,
        "layer_groups": model_layer_groups(loaded.backbone),
        "map_space": map_spaces(cfg, loaded),
    }
    current = dict(group.attrs)
    if any(current.get(k) != v for k, v in attrs.items()):
        group.update_attributes(attrs)  # one write (attrs.update writes once per key)
    write_classes(group, loaded.classes)


def model_layer_groups(backbone: Any) -> list[list[str]]:
    """The randomisation test's layer groups of the network, top-down
    (:func:`pipeline.evaluation.metrics.layer_groups`)."""
    from pipeline.attribution.accel import network
    from pipeline.evaluation.metrics import layer_groups

    return layer_groups(network(backbone))


def resolve_methods(cfg: Config, loaded: Any) -> Config:
    """``cfg`` with each layer method's ``layer`` resolved on the loaded model (found when
    empty, checked when given), so that the hashes, the store and ``config.resolved.json``
    name the layer read; before any work.

    Raises
    ------
    ConfigError
        A method that hooks modules on an exported program (it has none), or a ``layer``
        that is not a module with a spatial output, or one the target's gradient does not
        reach (the message lists the candidates).
    """
    import dataclasses

    import torch

    from pipeline.attribution.cam import find_layer
    from pipeline.attribution.method_registry import METHODS
    from pipeline.models.sources import source_for

    source = source_for(cfg.model.arch, cfg.model.weights)
    methods = {}
    for name, params in cfg.methods.items():
        spec, resolved = METHODS[name], dict(params)
        if spec.hooks and source.modules_refusal:
            got = source.modules_refusal.format(weights=cfg.model.weights)
            raise ConfigError(f"[methods.{name}]: expected a model with modules to hook, got "
                              f"{got} drop [methods.{name}].")
        if "layer" in spec.params:
            image = torch.zeros(1, 3, cfg.dataset.crop, cfg.dataset.crop)
            try:
                resolved["layer"], _ = find_layer(loaded.model, image, params["layer"])
            except ConfigError as exc:
                raise ConfigError(f"[methods.{name}] {exc}".replace("[methods] ", "")) \
                    from None
        methods[name] = resolved
    return dataclasses.replace(cfg, methods=methods)


def map_spaces(cfg: Config, loaded: Any) -> dict[str, str]:
    """Per method, what its map is: ``input``, or the layer it comes from and how it was
    brought to the input's size (:func:`pipeline.attribution.method_registry.map_space`)."""
    import torch

    from pipeline.attribution.cam import find_layer
    from pipeline.attribution.method_registry import METHODS, map_space

    out = {}
    crop = cfg.dataset.crop
    for name, params in cfg.methods.items():
        spec = METHODS[name]
        grid = None
        if spec.space != "input":
            _, grid = find_layer(loaded.model, torch.zeros(1, 3, crop, crop), params["layer"])
        out[name] = map_space(spec, params, crop, grid)
    return out


def requested_key(cfg: Config) -> str:
    """A hash of the config as asked for (before the model resolved anything), where it came
    from left out: what tells a rerun that it asks for what the last run resolved."""
    from workflows.config.hashing import stable_hash

    return stable_hash({k: v for k, v in cfg.to_dict().items() if k != "source"})


def write_resolved_config(cfg: Config, hashes: Hashes, weights_id: str, device: str,
                          scheduler: str, requested: str = "") -> None:
    """``config.resolved.json``: the config as resolved, with the hashes and versions; and
    ``config.toml``, the same config as a file that later commands load (``xai status
    RUN_DIR``)."""
    from workflows.config.paths import RUN_CONFIG
    from workflows.config.toml_writer import config_toml

    atomic_write_bytes(cfg.run_dir / RUN_CONFIG, config_toml(cfg).encode())
    atomic_write_json(cfg.run_dir / "config.resolved.json",
                      {**cfg.to_dict(), "requested": requested,
                       "stage_hashes": flat_hashes(hashes),
                       "weights_id": weights_id, "device": device, "scheduler": scheduler,
                       "package_versions": package_versions()})
