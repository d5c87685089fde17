"""``evaluate``: attribution-quality metrics on the stored maps, with a random floor.

Per shard, for every configured method and for uniform random maps (the floor every number is
compared with), the metrics of ``[evaluate] metrics`` (:data:`pipeline.metrics.METRICS`) are
computed on the ``aggregated`` maps and written to the schema's evaluation arrays
(``metric_<name>``, ``random_<name>``, ``curve_<name>``, ``random_curve_<name>``,
``randomisation``). Localisation metrics are NaN for images without a mask.

After the shards, :meth:`Evaluate.finalize` writes ``evaluation.json`` (means with 95%
bootstrap intervals, the random row, the randomisation test) and ``evaluation.png``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.store import StoreView, array, explainers
from workflows import faults, worker
from workflows.config import Config
from workflows.plugin import (
    Context,
    Stage,
    Task,
    done,
    drop,
    explained,
    open_view,
    shard_length,
    store_sizes,
    to_input,
    unit_rows,
)
from workflows.state import atomic_write_bytes, atomic_write_json, disk_errors


def evaluation_arrays(cfg: Config) -> list[str]:
    """The arrays the stage writes under ``cfg``."""
    from pipeline.metrics import METRICS

    out = []
    for name in cfg.evaluate.metrics:
        out += [f"metric_{name}", f"random_{name}"]
        if METRICS[name].curve:
            out += [f"curve_{name}", f"random_curve_{name}"]
    if cfg.evaluate.randomisation_images:
        out.append("randomisation")
    return out


class Evaluate(Stage):
    name = "evaluate"
    reads = ("pixels", "status", "pred", "label", "mask", "aggregated", "explainer")
    device = True
    doc = ("metrics of every method's maps and of random maps: deletion, insertion, "
           "localisation, sparseness, randomisation")
    how_to_enable = "add an [evaluate] table with metrics"

    def enabled(self, cfg: Config) -> bool:
        """On when ``[evaluate] metrics`` names at least one metric (the randomisation test
        then runs too, unless ``randomisation_images = 0``)."""
        return bool(cfg.evaluate.metrics)

    def depends(self, cfg: Config, method: str | None, weights_id: str) -> Any:
        return {"evaluate": cfg.to_dict()["evaluate"], "target": cfg.run.target,
                "methods": list(cfg.method_names), "seed": cfg.run.seed,
                "head": cfg.model.head,
                "params": {m: dict(p) for m, p in cfg.methods.items()}}

    def prepare(self, group: Any, cfg: Config) -> None:
        """Create the arrays of the configured metrics (NaN) and drop those no metric asks
        for any more. A shape change also changes the stage's hash, so its records are
        stale anyway."""
        from pipeline.metrics import LAYER_GROUPS

        wanted = evaluation_arrays(cfg) if self.enabled(cfg) else []
        drop(group, [k for k in self.schema.instances(group, self.writes) if k not in wanted])
        sizes = {**store_sizes(group, cfg), "step": cfg.evaluate.steps + 1,
                 "layer_group": LAYER_GROUPS}
        for name in wanted:
            self.schema.create(group, name, sizes, shard_length(group))

    def run(self, task: Task) -> dict[str, Any]:
        """Every configured metric for every method's maps and the random maps of one shard,
        and the randomisation test for the shard's images among the first N."""
        assert task.model is not None
        eng = worker.model_for(task.model)
        cfg = task.cfg
        store = open_view(task)
        data = store.rows(unit_rows(task), "pixels", "status", "pred", "label", "mask")
        methods = [m for m in store.explainers if m in cfg.methods]
        ok, classes = explained(data, cfg.run.target)
        results: dict[str, np.ndarray] = {}
        if ok.size:
            results = _shard_scores(task, eng, store, data, methods, ok, classes)
        faults.point("evaluate:before-write")
        _write(store, task, methods, ok, results)
        return done(task, store, eng.device)

    def finalize(self, ctx: Context) -> dict[str, Any] | None:
        """``evaluation.json`` and ``evaluation.png`` from the store's evaluation arrays."""
        from pipeline.plots import evaluation_figure, png

        summary = evaluation_summary(ctx.group, ctx.cfg)
        if summary:
            with disk_errors(ctx.run_dir):
                atomic_write_json(ctx.run_dir / "evaluation.json", summary)
                fig = evaluation_figure(summary, stored_scores(ctx.group, ctx.cfg))
                if fig is not None:
                    atomic_write_bytes(ctx.run_dir / "evaluation.png", png(fig, dpi=100))
        return summary


def _forward(backbone: Any) -> Any:
    """Target-class probabilities whatever the run's head: softmax over the logits."""
    return lambda x: backbone(x).float().softmax(dim=1)


def random_maps(indices: Sequence[int], shape: tuple[int, int], seed: int) -> np.ndarray:
    """The random maps of images ``indices`` ``(K, H, W)``: seeded per image, so the floor is
    the same for any shard size or resume."""
    from pipeline.methods import image_seed
    from pipeline.metrics import random_attribution

    return np.concatenate([random_attribution((1, *shape), image_seed(seed + 7919, int(i)))
                           for i in indices]).astype(np.float32)


def _scores(spec: Any, maps: np.ndarray, masks: np.ndarray, forward: Any, x: Any, targets: Any,
            params: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """One metric on ``maps`` (R, H, W); localisation metrics are NaN where a mask is empty."""
    if spec.needs_model:
        score, curve = spec.fn(forward, x, maps, targets, **params)
        return np.asarray(score), np.asarray(curve)
    if spec.needs_mask:
        score = np.asarray(spec.fn(maps, masks), dtype=np.float64)
        score[~masks.any(axis=(1, 2))] = np.nan
        return score, None
    return np.asarray(spec.fn(maps), dtype=np.float64), None


def _shard_scores(task: Task, eng: Any, store: StoreView, data: Mapping[str, np.ndarray],
                  methods: Sequence[str], ok: np.ndarray, classes: np.ndarray
                  ) -> dict[str, np.ndarray]:
    """Per metric ``(M + 1, K)`` scores (the last row: the random maps), per curve metric
    ``(M + 1, K, steps + 1)`` curves, and ``(M, K, G)`` randomisation correlations."""
    import torch

    from pipeline.metrics import METRICS
    from pipeline.precision import precision_mode

    u, cfg = task.unit, task.cfg
    ev = cfg.evaluate
    crop = data["pixels"].shape[1]
    agg = store.array("aggregated")
    maps = np.stack([np.asarray(agg[store.slot(m), u.start:u.stop])[ok]
                     for m in methods])                            # (M, K, H, W)
    rand = random_maps(u.start + ok, (crop, crop), cfg.run.seed)   # (K, H, W)
    rows = np.concatenate([maps.reshape(-1, crop, crop), rand])    # (M*K + K, H, W)
    reps = len(methods) + 1
    masks = np.tile(data["mask"][ok], (reps, 1, 1))
    forward = _forward(eng.backbone)
    norm = cfg.normalization()
    params = {"steps": ev.steps, "baseline": ev.baseline,
              "baseline_params": {"baseline_sigma": ev.baseline_sigma},
              "max_batch": max(1, eng.max_batch * 4), "norm": norm}
    results: dict[str, np.ndarray] = {}
    with worker.device_lock(eng.device), precision_mode(cfg.run.precision, eng.device):
        x = to_input(data["pixels"][ok], eng.device, norm)
        xs = x.repeat(reps, 1, 1, 1)
        targets = torch.as_tensor(classes[ok].astype(np.int64), device=eng.device)
        ts = targets.repeat(reps)
        for name in ev.metrics:
            faults.delay("evaluate")
            score, curve = _scores(METRICS[name], rows, masks, forward, xs, ts, params)
            results[name] = score.reshape(reps, ok.size)
            if curve is not None:
                results[f"curve:{name}"] = curve.reshape(reps, ok.size, -1)
        chosen = ok[(u.start + ok) < ev.randomisation_images]
        if chosen.size:
            results["randomisation"] = _randomisation(task, eng, methods, x, targets,
                                                      np.isin(ok, chosen))
    return results


def _randomisation(task: Task, eng: Any, methods: Sequence[str], x: Any, targets: Any,
                   pick: np.ndarray) -> np.ndarray:
    """(M, K, G) Spearman correlations for the picked images (NaN for the others)."""
    import torch

    from pipeline.methods import METHODS, attribute, image_seed
    from pipeline.metrics import LAYER_GROUPS, cascading_randomisation
    from pipeline.model import with_head

    cfg, u = task.cfg, task.unit
    idx = torch.as_tensor(np.flatnonzero(pick), device=x.device)
    images, tg = x[idx], targets[idx]
    seeds = [image_seed(cfg.run.seed, u.start + int(k)) for k in np.flatnonzero(pick)]
    out = np.full((len(methods), pick.size, LAYER_GROUPS), np.nan)
    for i, name in enumerate(methods):
        spec, params = METHODS[name], cfg.methods[name]

        def explain(backbone: Any, imgs: Any, tgt: Any, spec: Any = spec,
                    params: Any = params) -> np.ndarray:
            model = with_head(backbone, cfg.model.head)
            attr, _, _ = attribute(spec, model, imgs, tgt, params, eng.max_batch, seeds,
                                   norm=cfg.normalization())
            return attr.sum(dim=1).cpu().numpy()

        backbone = eng.for_method(spec.hooks, head=False)
        corr = cascading_randomisation(backbone, _layer_groups(backbone), explain,
                                       images, tg, seed=cfg.run.seed)
        out[i, pick, :corr.shape[0]] = corr.T
    return out


def _layer_groups(backbone: Any) -> list[list[str]]:
    """:func:`~pipeline.metrics.layer_groups` of the network inside the engine's wrappers,
    under the names the wrapped model gives them (e.g. ``inner.layer4``)."""
    from pipeline.accel import network_path
    from pipeline.metrics import layer_groups

    path = network_path(backbone)
    inner = backbone.get_submodule(path) if path else backbone
    prefix = f"{path}." if path else ""
    return [[prefix + n for n in g] for g in layer_groups(inner)]


def _write(store: StoreView, task: Task, methods: Sequence[str], ok: np.ndarray,
           results: Mapping[str, np.ndarray]) -> None:
    u = task.unit
    rows = slice(u.start, u.stop)
    n_explainers = len(store.explainers)
    with disk_errors(task.store_path):
        for name in task.cfg.evaluate.metrics:
            for target, floor, key in ((f"metric_{name}", f"random_{name}", name),
                                       (f"curve_{name}", f"random_curve_{name}",
                                        f"curve:{name}")):
                if target not in store:
                    continue
                arr = store.array(target)
                block = np.full((n_explainers, u.size, *arr.shape[2:]), np.nan, np.float32)
                rand = np.full((u.size, *arr.shape[2:]), np.nan, np.float32)
                if key in results:
                    for i, m in enumerate(methods):
                        block[store.slot(m), ok] = results[key][i]
                    rand[ok] = results[key][-1]
                arr[:, rows] = block
                store.array(floor)[rows] = rand
            faults.point("evaluate:mid-write")
        if "randomisation" in store:
            arr = store.array("randomisation")
            block = np.full((n_explainers, u.size, arr.shape[2]), np.nan, np.float32)
            if "randomisation" in results:
                for i, m in enumerate(methods):
                    block[store.slot(m), ok] = results["randomisation"][i]
            arr[:, rows] = block


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
    from pipeline.metrics import METRICS, RESNET_LAYER_GROUPS

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
