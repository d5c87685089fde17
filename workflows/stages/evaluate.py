"""``evaluate``: attribution-quality metrics on the stored maps, with a random floor.

The metrics of ``[evaluate] metrics`` (:data:`pipeline.evaluation.metrics.METRICS`) are computed on
the ``aggregated`` maps in one unit per (method, shard), recorded like ``attribute``'s: a unit
writes its method's slot of ``metric_<name>``, ``curve_<name>`` and ``randomisation`` (the
randomisation test, for the shard's images among the first ``randomisation_images``). The floor
every number is compared with, the same metrics on uniform random maps, is the stage's shared unit
per shard (``random_<name>``, ``random_curve_<name>``): computed once per shard, whatever the
methods. A unit's hash holds the ``[evaluate]`` settings, the target, seed and head, and for a
method's unit that method's parameters; the chain adds the data, the model and that method's maps
(:meth:`workflows.runner.stage_registry.StageRegistry.upstream_methods`). So a change to one method
re-evaluates that method alone, and never the floor. Localisation metrics are NaN for images
without a mask.

After the units, :meth:`Evaluate.finalize` writes ``evaluation.json`` (means with 95%
bootstrap intervals, the random row, the randomisation test) and ``evaluation.png``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.store.access import explainers
from pipeline.store.arrays import array
from pipeline.store.view import StoreView
from workflows.config.run_config import Config
from workflows.runner import fault_injection as faults
from workflows.runner import worker
from workflows.runner.disk_writes import atomic_write_bytes, atomic_write_json, disk_errors
from workflows.runner.stage_api import (
    Context,
    Stage,
    Task,
    done,
    drop,
    explained,
    open_view,
    register_stage,
    shard_length,
    store_sizes,
    to_input,
    unit_rows,
)

#: The ``[evaluate]`` settings the random floor does not use (the randomisation test re-runs
#: the methods; the floor has none).
FLOOR_IGNORES = ("randomisation_images",)


def evaluation_arrays(cfg: Config) -> list[str]:
    """The arrays the stage writes under ``cfg``."""
    from pipeline.evaluation.metrics import METRICS

    out = []
    for name in cfg.evaluate.metrics:
        out += [f"metric_{name}", f"random_{name}"]
        if METRICS[name].curve:
            out += [f"curve_{name}", f"random_curve_{name}"]
    if cfg.evaluate.randomisation_images:
        out.append("randomisation")
    return out


@register_stage
class Evaluate(Stage):
    name = "evaluate"
    reads = ("pixels", "status", "pred", "label", "mask", "aggregated", "explainer")
    writes = ("metric_", "random_", "curve_", "random_curve_", "randomisation")
    per_method = True
    shared = True  # the random floor: one unit per shard
    shared_label = "random maps (floor)"
    device = True
    doc = ("metrics of every method's maps and of random maps: deletion, insertion, "
           "localisation, sparseness, randomisation")
    how_to_enable = "add an [evaluate] table with metrics"

    def enabled(self, cfg: Config) -> bool:
        """On when ``[evaluate] metrics`` names at least one metric (the randomisation test
        then runs too, unless ``randomisation_images = 0``)."""
        return bool(cfg.evaluate.metrics)

    def depends(self, cfg: Config, method: str | None, weights_id: str) -> Any:
        """The ``[evaluate]`` settings, target, seed and head; a method's unit adds that
        method's parameters. The floor's (``method`` None) leaves out
        :data:`FLOOR_IGNORES`."""
        settings = cfg.to_dict()["evaluate"]
        common = {"target": cfg.run.target, "seed": cfg.run.seed, "head": cfg.model.head}
        if method is None:
            return {"floor": {k: v for k, v in settings.items() if k not in FLOOR_IGNORES},
                    **common}
        return {"evaluate": settings, **common, "params": dict(cfg.methods[method])}

    def prepare(self, group: Any, cfg: Config) -> None:
        """Create the arrays of the configured metrics (NaN) and drop those no metric asks
        for any more. A shape change also changes the stage's hashes, so its records are
        stale anyway."""
        from pipeline.evaluation.metrics import LAYER_GROUPS

        wanted = evaluation_arrays(cfg) if self.enabled(cfg) else []
        stored = self.schema.instances(group, self.written_families)
        drop(group, [k for k in stored if k not in wanted])
        sizes = {**store_sizes(group, cfg), "step": cfg.evaluate.steps + 1,
                 "layer_group": LAYER_GROUPS}
        for name in wanted:
            self.schema.create(group, name, sizes, shard_length(group))

    def run(self, task: Task) -> dict[str, Any]:
        """One shard: every configured metric on one method's maps (and the randomisation
        test for the shard's images among the first N), or on the random maps (the shared
        unit, ``method`` None)."""
        assert task.model is not None
        eng = worker.model_for(task.model)
        cfg, u = task.cfg, task.unit
        store = open_view(task)
        data = store.rows(unit_rows(task), "pixels", "status", "pred", "label", "mask")
        ok, classes = explained(data, cfg.run.target)
        crop = data["pixels"].shape[1]
        if u.method is None:
            maps = random_maps(u.start + ok, (crop, crop), cfg.run.seed)
        else:
            maps = store.read_maps("aggregated", store.slot(u.method), unit_rows(task))[ok]
        results: dict[str, np.ndarray] = {}
        compute = 0.0
        if ok.size:
            with worker.device_lock(eng.device):
                t0 = time.perf_counter()
                results = unit_scores(task, eng, data, maps, ok, classes)
                compute = time.perf_counter() - t0
        faults.point("evaluate:before-write")
        _write(store, task, ok, results)
        return done(task, store, eng.device, compute_seconds=compute)

    def finalize(self, ctx: Context) -> dict[str, Any] | None:
        """``evaluation.json`` and ``evaluation.png`` from the store's evaluation arrays."""
        from pipeline.render.figures import evaluation_figure, png

        summary = evaluation_summary(ctx.group, ctx.cfg)
        if summary:
            with disk_errors(ctx.run_dir):
                atomic_write_json(ctx.run_dir / "evaluation.json", summary)
                fig = evaluation_figure(summary, stored_scores(ctx.group, ctx.cfg))
                if fig is not None:
                    atomic_write_bytes(ctx.run_dir / "evaluation.png", png(fig, dpi=100))
        return summary


def random_maps(indices: Sequence[int] | np.ndarray, shape: tuple[int, int], seed: int
                ) -> np.ndarray:
    """The random maps of images ``indices`` ``(K, H, W)``: seeded per image, so the floor is
    the same for any shard size or resume."""
    from pipeline.attribution.method_registry import image_seed
    from pipeline.evaluation.metrics import random_attribution

    if not len(indices):
        return np.zeros((0, *shape), np.float32)
    return np.concatenate([random_attribution((1, *shape), image_seed(seed + 7919, int(i)))
                           for i in indices]).astype(np.float32)


def unit_scores(task: Task, eng: Any, data: Mapping[str, np.ndarray], maps: np.ndarray,
                ok: np.ndarray, classes: np.ndarray) -> dict[str, np.ndarray]:
    """The scores of one unit's ``maps`` ``(K, H, W)`` (the shard's explained images ``ok``):
    per metric ``(K,)``, per curve metric ``curve:<name>`` ``(K, steps + 1)``, and for a
    method's unit with images among the first ``randomisation_images`` the randomisation
    correlations ``(K, G)`` (NaN rows for the others). The caller holds the device lock."""
    import torch

    from pipeline.attribution.precision import precision_mode
    from pipeline.evaluation.metrics import METRICS, score_maps, target_probabilities

    u, cfg = task.unit, task.cfg
    ev = cfg.evaluate
    masks = data["mask"][ok]
    forward = target_probabilities(eng.backbone)
    norm = cfg.normalization()
    params = ev.flip_params(eng.max_batch, norm)
    results: dict[str, np.ndarray] = {}
    with precision_mode(cfg.run.precision, eng.device):
        x = to_input(data["pixels"][ok], eng.device, norm)
        targets = torch.as_tensor(classes[ok].astype(np.int64), device=eng.device)
        for name in ev.metrics:
            faults.delay("evaluate")
            score, curve = score_maps(METRICS[name], maps, masks, forward, x, targets, params)
            results[name] = score
            if curve is not None:
                results[f"curve:{name}"] = curve
        pick = (u.start + ok) < ev.randomisation_images
        if u.method is not None and pick.any():
            results["randomisation"] = _randomisation(task, eng, u.method, x, targets, pick)
    return results


def _randomisation(task: Task, eng: Any, method: str, x: Any, targets: Any,
                   pick: np.ndarray) -> np.ndarray:
    """(K, G) Spearman correlations of ``method``'s maps for the picked images (NaN for the
    others)."""
    import torch

    from pipeline.attribution.method_registry import METHODS, attribute, image_seed
    from pipeline.evaluation.metrics import LAYER_GROUPS, cascading_randomisation
    from pipeline.models.classifier import with_head

    cfg, u = task.cfg, task.unit
    idx = torch.as_tensor(np.flatnonzero(pick), device=x.device)
    images, tg = x[idx], targets[idx]
    # As the stage always has: positions among the explained images, not image indices.
    seeds = [image_seed(cfg.run.seed, u.start + int(k)) for k in np.flatnonzero(pick)]
    spec, params = METHODS[method], cfg.methods[method]

    def explain(backbone: Any, imgs: Any, tgt: Any) -> np.ndarray:
        model = with_head(backbone, cfg.model.head)
        attr, _, _ = attribute(spec, model, imgs, tgt, params, eng.max_batch, seeds,
                               norm=cfg.normalization())
        return attr.sum(dim=1).cpu().numpy()

    backbone = eng.for_method(spec.hooks, head=False)
    corr = cascading_randomisation(backbone, _layer_groups(backbone), explain, images, tg,
                                   seed=cfg.run.seed)
    out = np.full((pick.size, LAYER_GROUPS), np.nan)
    out[pick, :corr.shape[0]] = corr.T
    return out


def _layer_groups(backbone: Any) -> list[list[str]]:
    """:func:`~pipeline.evaluation.metrics.layer_groups` of the network inside the engine's
    wrappers,
    under the names the wrapped model gives them (e.g. ``inner.layer4``)."""
    from pipeline.attribution.accel import network_path
    from pipeline.evaluation.metrics import layer_groups

    path = network_path(backbone)
    inner = backbone.get_submodule(path) if path else backbone
    prefix = f"{path}." if path else ""
    return [[prefix + n for n in g] for g in layer_groups(inner)]


def _write(store: StoreView, task: Task, ok: np.ndarray,
           results: Mapping[str, np.ndarray]) -> None:
    """The unit's region: its method's slot of ``metric_*``, ``curve_*`` and
    ``randomisation``, or (the floor) ``random_*`` and ``random_curve_*``; NaN for the images
    without a score."""
    u = task.unit
    rows = slice(u.start, u.stop)
    slot = store.slot(u.method) if u.method is not None else None
    prefixes = ("metric_", "curve_") if slot is not None else ("random_", "random_curve_")
    with disk_errors(task.store_path):
        for name in task.cfg.evaluate.metrics:
            for prefix, key in zip(prefixes, (name, f"curve:{name}"), strict=True):
                _write_rows(store, f"{prefix}{name}", rows, slot, ok, results.get(key))
            faults.point("evaluate:mid-write")
        if slot is not None:
            _write_rows(store, "randomisation", rows, slot, ok, results.get("randomisation"))


def _write_rows(store: StoreView, name: str, rows: slice, slot: int | None, ok: np.ndarray,
                values: np.ndarray | None) -> None:
    """Images ``rows`` of array ``name`` (of explainer ``slot``, if any): ``values`` at the
    positions ``ok``, NaN elsewhere; nothing when the store has no such array."""
    if name not in store:
        return
    arr = store.array(name)
    inner = arr.shape[1:] if slot is None else arr.shape[2:]
    block = np.full((rows.stop - rows.start, *inner), np.nan, np.float32)
    if values is not None:
        block[ok] = values
    store.write(name, rows, block, slot)


# ------------------------------------------------------------------------ the summary


def bootstrap_mean(values: np.ndarray, resamples: int, seed: int) -> dict[str, Any]:
    """Mean of the finite ``values`` and its 95% percentile-bootstrap interval."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = float(v.mean())
    if resamples and v.size > 1:
        rng = np.random.default_rng(seed)
        means = v[rng.integers(0, v.size, (resamples, v.size))].mean(axis=1)
        low, high = (float(q) for q in np.percentile(means, [2.5, 97.5]))
    else:
        low = high = mean
    return {"mean": mean, "low": low, "high": high, "n": int(v.size)}


def stored_scores(group: Any, cfg: Config) -> dict[str, dict[str, np.ndarray]]:
    """Per configured metric in the store: per method (in config order) and ``"random"``,
    the stored scores ``(N,)``."""
    names = explainers(group)
    methods = [m for m in cfg.method_names if m in names]
    out: dict[str, dict[str, np.ndarray]] = {}
    for metric in cfg.evaluate.metrics:
        if f"metric_{metric}" not in group:
            continue
        scores = np.asarray(array(group, f"metric_{metric}")[:])
        out[metric] = {m: scores[names.index(m)] for m in methods}
        out[metric]["random"] = np.asarray(array(group, f"random_{metric}")[:])
    return out


def evaluation_summary(group: Any, cfg: Config) -> dict[str, Any]:
    """Per metric: per method and for the random maps, the mean with a 95% bootstrap
    interval; the randomisation test per method and layer group; notes (e.g. no masks)."""
    from pipeline.evaluation.metrics import METRICS, RESNET_LAYER_GROUPS

    if not cfg.evaluate.metrics:
        return {}
    ev = cfg.evaluate
    names = explainers(group)
    methods = [m for m in cfg.method_names if m in names]
    out: dict[str, Any] = {"metrics": {}, "randomisation": {}, "notes": [],
                           "settings": cfg.to_dict()["evaluate"]}
    for name, per in stored_scores(group, cfg).items():
        spec = METRICS[name]
        entry: dict[str, Any] = {
            "description": spec.description,
            "better": "higher" if spec.higher_is_better else "lower",
            "methods": {m: bootstrap_mean(per[m], ev.bootstrap, cfg.run.seed) for m in methods},
            "random": bootstrap_mean(per["random"], ev.bootstrap, cfg.run.seed)}
        if spec.curve:
            curves = np.asarray(array(group, f"curve_{name}")[:])
            entry["mean_curve"] = {m: _nanmean_rows(curves[names.index(m)]) for m in methods}
            entry["mean_curve"]["random"] = _nanmean_rows(
                np.asarray(array(group, f"random_curve_{name}")[:]))
        out["metrics"][name] = entry
        if spec.needs_mask and entry["random"]["n"] == 0:
            out["notes"].append(f"{name}: NaN, this dataset has no ground-truth masks (the "
                                "evidence dataset has them)")
    if "randomisation" in group:
        corr = np.asarray(array(group, "randomisation")[:])
        for m in methods:
            out["randomisation"][m] = {
                "+".join(g): bootstrap_mean(corr[names.index(m), :, k], ev.bootstrap,
                                            cfg.run.seed)
                for k, g in enumerate(group.attrs.get("layer_groups") or RESNET_LAYER_GROUPS)}
    return out


def _nanmean_rows(curves: np.ndarray) -> list[float] | None:
    rows = curves[np.isfinite(curves).all(axis=1)]
    return rows.mean(axis=0).round(6).tolist() if rows.size else None
