"""The ``evaluate`` stage: attribution-quality metrics on the stored maps, with a random floor.

Per shard, for every configured method and for uniform random maps (the floor every number is
compared with), the metrics of ``[evaluate] metrics`` (:data:`pipeline.metrics.METRICS`) are
computed on the ``aggregated`` maps and written to store arrays:

``metric_<name>`` (explainer, image)
    one score per map; ``random_<name>`` (image,) the random maps' score.
``curve_<name>`` (explainer, image, step)
    deletion / insertion: target-class probability after each step; ``random_curve_<name>``.
``randomisation`` (explainer, image, layer_group)
    Spearman correlation of each map with the map after cascading parameter randomisation, on
    the first ``randomisation_images`` images (NaN elsewhere).

Localisation metrics are NaN for images without a mask. The summary (means with 95% bootstrap
intervals, the random row) is :func:`evaluation_summary`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.store import array, explainer_index, explainers, open_store
from workflows import faults, worker
from workflows.config import Config
from workflows.registry import Stage, register
from workflows.stages import _done, _rows, _to_input
from workflows.state import disk_errors

PREFIXES = ("metric_", "random_", "curve_", "randomisation")


def _enabled(cfg: Config) -> bool:
    """The stage is on when ``[evaluate] metrics`` names at least one metric (the
    randomisation test then runs too, unless ``randomisation_images = 0``)."""
    return bool(cfg.evaluate.metrics)


def evaluation_arrays(cfg: Config, n_explainers: int, n_images: int
                      ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[str, ...]]]:
    """The arrays the ``evaluate`` stage writes under ``cfg``: name -> (shape, chunks, dims)."""
    from pipeline.metrics import METRICS, RESNET_LAYER_GROUPS

    e, n, s = n_explainers, n_images, min(cfg.run.shard_size, max(n_images, 1))
    steps = cfg.evaluate.steps + 1
    out: dict[str, Any] = {}
    for name in cfg.evaluate.metrics:
        out[f"metric_{name}"] = ((e, n), (e, s), ("explainer", "image"))
        out[f"random_{name}"] = ((n,), (s,), ("image",))
        if METRICS[name].curve:
            out[f"curve_{name}"] = ((e, n, steps), (e, s, steps), ("explainer", "image", "step"))
            out[f"random_curve_{name}"] = ((n, steps), (s, steps), ("image", "step"))
    if cfg.evaluate.randomisation_images:
        g = len(RESNET_LAYER_GROUPS)
        out["randomisation"] = ((e, n, g), (e, s, g), ("explainer", "image", "layer_group"))
    return out


def prepare_arrays(group: Any, cfg: Config) -> None:
    """Create the evaluation arrays (NaN) that are missing or shaped for another config, and
    drop those no config asks for any more. Called by the coordinator before the stage runs;
    a shape change also changes the stage's hash, so its records are stale anyway."""
    n = array(group, "image").shape[0]
    wanted = evaluation_arrays(cfg, len(explainers(group)), n) if _enabled(cfg) else {}
    for name in [k for k in group.array_keys() if k.startswith(PREFIXES)]:
        if name not in wanted:
            del group[name]
    for name, (shape, chunks, dims) in wanted.items():
        if name in group and array(group, name).shape == shape:
            continue
        group.create_array(name, shape=shape, chunks=tuple(max(1, c) for c in chunks),
                           dtype="float32", fill_value=np.nan, dimension_names=dims,
                           overwrite=True)


def _forward(backbone: Any) -> Any:
    """Target-class probabilities whatever the run's head: softmax over the logits."""
    return lambda x: backbone(x).float().softmax(dim=1)


def _random_maps(indices: Sequence[int], shape: tuple[int, int], seed: int) -> np.ndarray:
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


def evaluate_shard(task: Any) -> dict[str, Any]:
    """Every configured metric for every method's maps and the random maps of one shard,
    and the randomisation test for the shard's images among the first N."""
    import torch

    from pipeline.metrics import METRICS
    from pipeline.precision import precision_mode

    assert task.engine is not None
    eng = worker.engine(task.engine)
    u, s = task.unit, task.settings
    ev = s.evaluate
    data = _rows(task, "pixels", "status", "pred", "label", "mask")
    group = open_store(task.store_path)
    methods = [m for m in explainers(group) if m in s.methods]
    classes = data["label"] if s.target == "label" else data["pred"]
    ok = np.flatnonzero((data["status"] == "ok") & (data["pred"] >= 0) & (classes >= 0))
    crop = data["pixels"].shape[1]
    results: dict[str, np.ndarray] = {}
    e = len(explainers(group))
    if ok.size:
        agg = array(group, "aggregated")
        maps = np.stack([np.asarray(agg[explainer_index(group, m), u.start:u.stop])[ok]
                         for m in methods])                       # (M, K, H, W)
        rand = _random_maps(u.start + ok, (crop, crop), s.seed)   # (K, H, W)
        rows = np.concatenate([maps.reshape(-1, crop, crop), rand])  # (M*K + K, H, W)
        reps = len(methods) + 1
        masks = np.tile(data["mask"][ok], (reps, 1, 1))
        forward = _forward(eng.backbone)
        params = {"steps": ev["steps"], "baseline": ev["baseline"],
                  "baseline_params": {"baseline_sigma": ev["baseline_sigma"]},
                  "max_batch": max(1, eng.max_batch * 4)}
        with worker.device_lock(eng.device), precision_mode(s.precision, eng.device):
            x = _to_input(data["pixels"][ok], eng.device)
            xs = x.repeat(reps, 1, 1, 1)
            targets = torch.as_tensor(classes[ok].astype(np.int64), device=eng.device)
            ts = targets.repeat(reps)
            for name in ev["metrics"]:
                spec = METRICS[name]
                faults.delay("evaluate")
                score, curve = _scores(spec, rows, masks, forward, xs, ts, params)
                results[name] = score.reshape(reps, ok.size)
                if curve is not None:
                    results[f"curve:{name}"] = curve.reshape(reps, ok.size, -1)
            chosen = ok[(u.start + ok) < ev["randomisation_images"]]
            if chosen.size:
                results["randomisation"] = _randomisation(task, eng, methods, x, targets,
                                                          np.isin(ok, chosen))
    faults.point("evaluate:before-write")
    _write(group, task, methods, ok, results, e)
    return _done(task, eng.device)


def _randomisation(task: Any, eng: Any, methods: Sequence[str], x: Any, targets: Any,
                   pick: np.ndarray) -> np.ndarray:
    """(M, K, G) Spearman correlations for the picked images (NaN for the others)."""
    import torch

    from pipeline.methods import METHODS, attribute, image_seed
    from pipeline.metrics import RESNET_LAYER_GROUPS, cascading_randomisation
    from pipeline.model import with_head

    s, u = task.settings, task.unit
    idx = torch.as_tensor(np.flatnonzero(pick), device=x.device)
    images, tg = x[idx], targets[idx]
    seeds = [image_seed(s.seed, u.start + int(k)) for k in np.flatnonzero(pick)]
    out = np.full((len(methods), pick.size, len(RESNET_LAYER_GROUPS)), np.nan)
    for i, name in enumerate(methods):
        spec, params = METHODS[name], s.methods[name]

        def explain(backbone: Any, imgs: Any, tgt: Any, spec: Any = spec,
                    params: Any = params) -> np.ndarray:
            model = with_head(backbone, s.head)
            attr, _, _ = attribute(spec, model, imgs, tgt, params, eng.max_batch, seeds)
            return attr.sum(dim=1).cpu().numpy()

        corr = cascading_randomisation(eng.backbone, _layer_groups(eng.backbone), explain,
                                       images, tg, seed=s.seed)
        out[i, pick] = corr.T
    return out


def _layer_groups(backbone: Any) -> list[list[str]]:
    """:data:`~pipeline.metrics.RESNET_LAYER_GROUPS` under the names the engine's backbone
    gives them (the engine may wrap the network, e.g. ``inner.layer4``)."""
    from pipeline.metrics import RESNET_LAYER_GROUPS

    names = {n for n, _ in backbone.named_modules()}
    for prefix in ("", "inner.", "0.", "0.inner.", "_orig_mod.", "inner._orig_mod."):
        if all(prefix + n in names for g in RESNET_LAYER_GROUPS for n in g):
            return [[prefix + n for n in g] for g in RESNET_LAYER_GROUPS]
    raise KeyError(f"Expected a torchvision resnet18 inside the engine's model, got modules "
                   f"{sorted(names)[:8]}...")


def _write(group: Any, task: Any, methods: Sequence[str], ok: np.ndarray,
           results: Mapping[str, np.ndarray], n_explainers: int) -> None:
    u = task.unit
    rows = slice(u.start, u.stop)
    with disk_errors(task.store_path):
        for name in task.settings.evaluate["metrics"]:
            for target, floor, key in ((f"metric_{name}", f"random_{name}", name),
                                       (f"curve_{name}", f"random_curve_{name}",
                                        f"curve:{name}")):
                if target not in group:
                    continue
                arr = array(group, target)
                block = np.full((n_explainers, u.size, *arr.shape[2:]), np.nan, np.float32)
                rand = np.full((u.size, *arr.shape[2:]), np.nan, np.float32)
                if key in results:
                    for i, m in enumerate(methods):
                        block[explainer_index(group, m), ok] = results[key][i]
                    rand[ok] = results[key][-1]
                arr[:, rows] = block
                array(group, floor)[rows] = rand
            faults.point("evaluate:mid-write")
        if "randomisation" in group:
            arr = array(group, "randomisation")
            block = np.full((n_explainers, u.size, arr.shape[2]), np.nan, np.float32)
            if "randomisation" in results:
                for i, m in enumerate(methods):
                    block[explainer_index(group, m), ok] = results["randomisation"][i]
            arr[:, rows] = block


def _evaluate_depends(cfg: Config, _method: str | None, _weights: str) -> Any:
    return {"evaluate": cfg.to_dict()["evaluate"], "target": cfg.run.target,
            "methods": list(cfg.method_names), "seed": cfg.run.seed, "head": cfg.model.head,
            "params": {m: dict(p) for m, p in cfg.methods.items()}}


register(Stage(
    "evaluate", evaluate_shard, reads=("pixels", "status", "pred", "label", "mask",
                                       "aggregated", "explainer"),
    writes=(), after=("ingest", "predict", "aggregate"), depends=_evaluate_depends,
    device=True, enabled=_enabled, writes_prefix=PREFIXES,
    doc="metrics of every method's maps and of random maps: deletion, insertion, "
        "localisation, sparseness, randomisation"))


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


def evaluation_summary(group: Any, cfg: Config) -> dict[str, Any]:
    """Per metric: per method and for the random maps, the mean with a 95% bootstrap
    interval; the randomisation test per method and layer group; notes (e.g. no masks)."""
    from pipeline.metrics import METRICS, RESNET_LAYER_GROUPS

    if not _enabled(cfg):
        return {}
    ev = cfg.evaluate
    names = explainers(group)
    methods = [m for m in cfg.method_names if m in names]
    out: dict[str, Any] = {"metrics": {}, "randomisation": {}, "notes": [],
                           "settings": cfg.to_dict()["evaluate"]}
    for name in ev.metrics:
        spec = METRICS[name]
        scores = np.asarray(array(group, f"metric_{name}")[:])
        entry: dict[str, Any] = {
            "description": spec.description,
            "better": "higher" if spec.higher_is_better else "lower",
            "methods": {m: bootstrap_mean(scores[names.index(m)], ev.bootstrap, cfg.run.seed)
                        for m in methods},
            "random": bootstrap_mean(np.asarray(array(group, f"random_{name}")[:]),
                                     ev.bootstrap, cfg.run.seed)}
        if spec.curve:
            curves = np.asarray(array(group, f"curve_{name}")[:])
            entry["mean_curve"] = {m: _nanmean_rows(curves[names.index(m)]) for m in methods}
            entry["mean_curve"]["random"] = _nanmean_rows(
                np.asarray(array(group, f"random_curve_{name}")[:]))
        out["metrics"][name] = entry
        if spec.needs_mask and entry["random"]["n"] == 0:
            note = (f"{name}: NaN, this dataset has no ground-truth masks (the evidence "
                    "dataset has them)")
            out["notes"].append(note)
    if "randomisation" in group:
        corr = np.asarray(array(group, "randomisation")[:])
        for m in methods:
            out["randomisation"][m] = {
                "+".join(g): bootstrap_mean(corr[names.index(m), :, k], ev.bootstrap,
                                            cfg.run.seed)
                for k, g in enumerate(RESNET_LAYER_GROUPS)}
    return out


def _nanmean_rows(curves: np.ndarray) -> list[float] | None:
    rows = curves[np.isfinite(curves).all(axis=1)]
    return rows.mean(axis=0).round(6).tolist() if rows.size else None


def evaluation_figure(summary: Mapping[str, Any], group: Any, cfg: Config, path: Any) -> None:
    """One PNG: per metric, the distribution of each method's scores (and the random
    maps'), and the mean deletion / insertion curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.render import save_figure_atomic

    metrics = list(summary.get("metrics", {}))
    curves = [m for m in metrics if "mean_curve" in summary["metrics"][m]]
    panels = len(metrics) + len(curves) + (1 if summary.get("randomisation") else 0)
    if not panels:
        return
    cols = min(3, panels)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    names = explainers(group)
    methods = [m for m in cfg.method_names if m in names]
    k = 0
    for name in metrics:
        ax = axes.flat[k]
        k += 1
        scores = np.asarray(array(group, f"metric_{name}")[:])
        data = [scores[names.index(m)] for m in methods]
        data.append(np.asarray(array(group, f"random_{name}")[:]))
        data = [d[np.isfinite(d)] for d in data]
        labels = [*methods, "random"]
        if any(d.size for d in data):
            ax.boxplot([d if d.size else [np.nan] for d in data], orientation="horizontal")
        ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=7)
        better = summary["metrics"][name]["better"]
        ax.set_title(f"{name} ({better} is better)", fontsize=9)
    for name in curves:
        ax = axes.flat[k]
        k += 1
        for label, curve in summary["metrics"][name]["mean_curve"].items():
            if curve is not None:
                x = np.linspace(0, 1, len(curve))
                ax.plot(x, curve, label=label, linestyle="--" if label == "random" else "-")
        ax.set_xlabel("fraction of pixels " + ("removed" if name == "deletion" else "revealed"),
                      fontsize=8)
        ax.set_ylabel("target probability", fontsize=8)
        ax.set_title(f"mean {name} curve", fontsize=9)
        ax.legend(fontsize=6)
    if summary.get("randomisation"):
        ax = axes.flat[k]
        k += 1
        for m, per_group in summary["randomisation"].items():
            means = [v["mean"] if v["mean"] is not None else np.nan for v in per_group.values()]
            ax.plot(range(len(means)), means, marker="o", label=m)
        groups = list(next(iter(summary["randomisation"].values())))
        ax.set_xticks(range(len(groups)), groups, fontsize=6, rotation=20)
        ax.set_ylabel("Spearman vs original map", fontsize=8)
        ax.set_title("cascading randomisation (top-down)", fontsize=9)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[k:]:
        ax.axis("off")
    fig.tight_layout()
    save_figure_atomic(fig, path)
    plt.close(fig)


# The report stage reads this one's arrays: registered after it.
import workflows.report  # noqa: E402, F401
