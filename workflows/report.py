"""The ``report`` stage: a static HTML report of the run, in ``<run>/report/``.

Per shard (incremental: only shards whose inputs changed are rebuilt), into
``<run>/report-parts/``: the crops (JPEG), one grey-level map per (image, method) (PNG), the
rows the gallery shows (``data/shard-NNNNNN.js``), and the downsampled maps the explanation
strategies are clustered from (``features/shard-NNNNNN.npy``).

Then, in the coordinator (:func:`build_report`): the explanation strategies (SpRAy,
:mod:`pipeline.spray`) per predicted class and method, written to the store's ``strategy``
array; the summary and strategies pages and their plots; and the folder, assembled from the
parts (hard links) in a private folder and published in one step
(:func:`pipeline.report.publish`), so a killed build leaves the old report or the new one.

Built from incomplete inputs (``xai report`` on a run with stages missing), a shard's rows
show what is there, the pages say which stages are missing, and the shard is not recorded:
the next run builds it again.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import report as rp
from pipeline.store import array, explainer_index, explainers, open_store
from workflows import faults
from workflows.config import Config
from workflows.registry import Stage, register, upstream
from workflows.stages import _done, explained_status
from workflows.state import atomic_write_bytes, disk_errors, read_json

PARTS = "report-parts"
REPORT = "report"
#: The status shown for an image whose ingest has not run yet.
NOT_INGESTED = "not ingested yet (the ingest stage is missing)"
#: Written into the report folder: what it was built from (see :func:`build_stamp`).
STAMP = "data/build.json"


def parts_dir(run_dir: Path | str) -> Path:
    return Path(run_dir) / PARTS


def part_data(run_dir: Path | str, index: int) -> Path:
    """A shard's gallery rows; written last, so it is the unit's output file."""
    return parts_dir(run_dir) / rp.shard_data_path(index)


def part_features(run_dir: Path | str, index: int) -> Path:
    return parts_dir(run_dir) / "features" / f"shard-{index:06d}.npy"


def _enabled(cfg: Config) -> bool:
    return cfg.report.enabled


def _write(path: Path, data: bytes) -> None:
    """Temp name + rename, without fsync (thousands of tiles; a torn one is rebuilt, since
    the shard is recorded only after all of them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _metric_names(group: Any, settings: Any) -> list[str]:
    names = list(settings.evaluate.get("metrics", ()))
    return [m for m in names if f"metric_{m}" in group]


def report_shard(task: Any) -> dict[str, Any]:
    """Crops, maps, rows and strategy features of one shard, into ``report-parts/``."""
    from pipeline.methods import METHODS, relative_completeness_error
    from pipeline.render import display_values
    from pipeline.spray import downsample

    u, s = task.unit, task.settings
    run_dir = Path(task.run_dir)
    missing = set(task.extra.get("missing", ()))  # "stage" or "stage/method" not complete
    group = open_store(task.store_path, mode="r")
    sl = slice(u.start, u.stop)
    ids = array(group, "image")[sl].tolist()
    status = array(group, "status")[sl].tolist()
    pred, prob = np.asarray(array(group, "pred")[sl]), np.asarray(array(group, "prob")[sl])
    label, pixels = np.asarray(array(group, "label")[sl]), np.asarray(array(group, "pixels")[sl])
    methods = list(s.methods)
    slots = [explainer_index(group, m) for m in methods]
    norm = array(group, "normalized")
    maps = np.stack([np.asarray(norm[j, sl]) for j in slots])  # (M, N, H, W)
    rel = np.stack([relative_completeness_error(array(group, "delta")[j, sl],
                                                array(group, "gap")[j, sl]) for j in slots])
    ig = [bool(METHODS[m].has_delta) for m in methods]
    metrics = _metric_names(group, s) if "evaluate" not in missing else []

    def lacks(stage: str, method: str | None = None) -> bool:
        return stage in missing or (method is not None and f"{stage}/{method}" in missing)

    # What an incomplete input would show is not current: leave it out.
    usable = [not (lacks("ingest") or lacks("predict") or lacks("attribute", m)
                   or lacks("normalize", m)) for m in methods]
    deltas_ok = [not (lacks("predict") or lacks("attribute", m)) for m in methods]
    scores = {m: np.stack([np.asarray(array(group, f"metric_{m}")[j, sl]) for j in slots])
              for m in metrics}
    size = int(s.report.get("downsample", 28))
    style = dataclasses.replace(s.style, signed=False)
    features = np.full((len(methods), u.size, size * size), np.nan, dtype=np.float32)
    rows = []
    faults.point("report:before-write")
    with disk_errors(parts_dir(run_dir)):
        for k in range(u.size):
            i = u.start + k
            st = explained_status(str(status[k]), int(label[k]), s.target) \
                if status[k] else NOT_INGESTED
            ok = st == "ok"
            crop = str(status[k]) == "ok" and not lacks("ingest")
            if crop:
                _write(parts_dir(run_dir) / rp.crop_path(u.index, i), rp.crop_jpeg(pixels[k]))
            have = []
            for j in range(len(methods)):
                m = maps[j, k]
                good = ok and usable[j] and bool(np.isfinite(m).all())
                if good:
                    _write(parts_dir(run_dir) / rp.map_path(j, u.index, i),
                           rp.map_png(display_values(m, style)))
                    features[j, k] = downsample(m[None], size)[0]
                have.append(good)
            rows.append({
                "i": i, "id": str(ids[k]), "st": st, "c": crop, "m": have,
                "p": int(pred[k]), "pr": rp.finite(prob[k]), "t": int(label[k]),
                "d": [rp.finite(rel[j, k]) if ig[j] and deltas_ok[j] else None
                      for j in range(len(methods))],
                "s": {m: [rp.finite(scores[m][j, k]) for j in range(len(methods))]
                      for m in metrics}})
        buf = io.BytesIO()
        np.save(buf, features)
        _write(part_features(run_dir, u.index), buf.getvalue())
        faults.point("report:mid-write")
        payload = {"index": u.index, "start": u.start, "stop": u.stop, "rows": rows,
                   "missing": sorted(missing)}
        atomic_write_bytes(part_data(run_dir, u.index),
                           rp.data_script("XAI_SHARDS", payload, append=True))
    result = _done(task, file=part_data(run_dir, u.index).name)
    if missing:
        result["provisional"] = True
    return result


def remove_stale_parts(run_dir: Path, valid: set[int]) -> int:
    """Delete the parts of shards without a current record (a changed shard size, a shard
    built from incomplete inputs): they are rebuilt."""
    removed = 0
    root = parts_dir(run_dir)
    for folder in (root / "img").glob("*/*") if (root / "img").is_dir() else []:
        if folder.is_dir() and folder.name.isdigit() and int(folder.name) not in valid:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    for folder, pattern in (("data", "shard-*.js"), ("features", "shard-*.npy")):
        for path in (root / folder).glob(pattern):
            try:
                index = int(path.name.split("-", 1)[1].split(".")[0])
            except ValueError:
                continue
            if index not in valid:
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def _report_depends(cfg: Config, _method: str | None, _weights: str) -> Any:
    r = cfg.render
    return {"version": 1, "target": cfg.run.target, "methods": list(cfg.method_names),
            "clip_percentile": r.clip_percentile, "downsample": cfg.report.downsample,
            "metrics": list(cfg.evaluate.metrics)}


register(Stage(
    "report", report_shard,
    reads=("image", "status", "pixels", "pred", "prob", "label", "normalized", "delta", "gap"),
    writes=(), after=("ingest", "predict", "attribute", "normalize", "evaluate"),
    depends=_report_depends, enabled=_enabled, partial_inputs=True,
    output_file=lambda run_dir, u: part_data(run_dir, u.index), remove_stale=remove_stale_parts,
    output_dirs=(PARTS, REPORT), crash_points=("before-write", "mid-write", "after-write",
                                               "after-record"),
    doc="the static HTML report report/index.html: gallery, summary, explanation strategies"))


# ------------------------------------------------------------------------ strategies


@dataclasses.dataclass
class Cluster:
    """One explanation strategy of one class under one method."""

    cls: int
    number: int
    members: list[int]
    mean: np.ndarray  # (size * size,)
    watermark: int | None = None  # members with the planted watermark, where known


def _load_features(run_dir: Path, units: Sequence[Any], n_methods: int, size: int
                   ) -> list[np.ndarray | None]:
    """Per shard, ``(M, N_shard, size * size)`` features; None where missing or of another
    shape (a stale file)."""
    out: list[np.ndarray | None] = []
    for u in units:
        try:
            f = np.load(part_features(run_dir, u.index))
        except (OSError, ValueError):
            f = None
        out.append(f if f is not None and f.shape == (n_methods, u.size, size * size)
                   else None)
    return out


def compute_strategies(group: Any, cfg: Config, run_dir: Path, units: Sequence[Any],
                       ) -> tuple[dict[str, list[Cluster]], np.ndarray, dict[str, Any]]:
    """SpRAy per (method, predicted class with at least ``min_images`` explained images).

    Returns the clusters per method, the ``(explainer, image)`` int16 cluster array (-1:
    not clustered) in the run's method order, and facts for the page (purity on a planted
    shortcut).
    """
    from pipeline.evidence import has_watermark
    from pipeline.spray import purity, strategies

    rc = cfg.report
    methods = list(cfg.method_names)
    n = array(group, "image").shape[0]
    size = rc.downsample
    labels = np.full((len(methods), n), -1, dtype=np.int16)
    clusters: dict[str, list[Cluster]] = {m: [] for m in methods}
    facts: dict[str, Any] = {"classes": 0, "purity": {}}
    parts = _load_features(run_dir, units, len(methods), size)
    if not units or any(p is None for p in parts):
        facts["note"] = "not computed: the report's shards are incomplete"
        return clusters, labels, facts
    feats = np.concatenate([p for p in parts if p is not None], axis=1)  # (M, n, F)
    # Grouped by the class the maps explain: the prediction, or the label (run.target).
    pred = np.asarray(array(group, "label" if cfg.run.target == "label" else "pred")[:])
    shortcut = cfg.shortcut()
    for j, m in enumerate(methods):
        done = np.isfinite(feats[j]).all(axis=1)
        for c in np.unique(pred[done & (pred >= 0)]):
            idx = np.flatnonzero(done & (pred == c))
            if idx.size < rc.min_images:
                continue
            found = strategies(feats[j, idx].reshape(-1, size, size), size=size,
                               n_neighbors=rc.neighbors, max_clusters=rc.max_clusters,
                               seed=cfg.run.seed)
            labels[j, idx] = found.labels
            marked = None
            if shortcut.on and int(c) == shortcut.label:
                marked = np.asarray([has_watermark(int(i), cfg.run.seed, "test", shortcut)
                                     for i in idx])
                facts["purity"][m] = {"class": int(c), "purity": purity(found.labels, marked),
                                      "images": int(idx.size), "clusters": found.n_clusters,
                                      "watermarked": int(marked.sum())}
            for k in np.unique(found.labels):
                sel = found.labels == k
                members = idx[sel]
                mean = feats[j, members].mean(axis=0)
                order = np.argsort(((feats[j, members] - mean) ** 2).sum(axis=1), kind="stable")
                clusters[m].append(Cluster(
                    int(c), int(k), [int(v) for v in members[order]], mean,
                    int(marked[sel].sum()) if marked is not None else None))
        facts["classes"] = max(facts["classes"], len({cl.cls for cl in clusters[m]}))
    return clusters, labels, facts


def write_strategy_array(group: Any, cfg: Config, labels: np.ndarray) -> None:
    """The store's ``strategy`` (explainer, image) int16, -1 where not clustered (in store
    slot order)."""
    names = explainers(group)
    n = array(group, "image").shape[0]
    full = np.full((len(names), n), -1, dtype=np.int16)
    for j, m in enumerate(cfg.method_names):
        if m in names:
            full[names.index(m)] = labels[j]
    if "strategy" not in group or array(group, "strategy").shape != full.shape:
        group.create_array("strategy", shape=full.shape,
                           chunks=(1, max(1, min(cfg.run.shard_size, n))), dtype="int16",
                           fill_value=-1, dimension_names=("explainer", "image"),
                           overwrite=True)
    array(group, "strategy")[:] = full


# ------------------------------------------------------------------------ pages


def _plots(group: Any, cfg: Config) -> dict[str, bytes]:
    """``plots/*.png``: completeness-error histograms, metric distributions, mean curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.methods import METHODS, relative_completeness_error
    from pipeline.metrics import METRICS

    names = explainers(group)
    methods = [m for m in cfg.method_names if m in names]
    out: dict[str, bytes] = {}
    ig = [m for m in methods if METHODS[m].has_delta]
    if ig and "gap" in group:
        fig, ax = plt.subplots(figsize=(6.4, 3.2))
        drawn = False
        for m in ig:
            j = names.index(m)
            rel = relative_completeness_error(array(group, "delta")[j], array(group, "gap")[j])
            rel = rel[np.isfinite(rel) & (rel > 0)]
            if rel.size:
                ax.hist(np.log10(rel), bins=30, histtype="step", linewidth=1.5, label=m)
                drawn = True
        ax.axvline(np.log10(cfg.run.completeness_warning), color="#d33", linestyle="--",
                   label=f"warning ({cfg.run.completeness_warning:g})")
        ax.set_xlabel("log10 relative completeness error |delta| / |F(x) - F(baseline)|")
        ax.set_ylabel("images")
        ax.legend(fontsize=8)
        if drawn:
            out["plots/completeness.png"] = rp.figure_png(fig)
        else:
            plt.close(fig)
    metrics = [m for m in cfg.evaluate.metrics if f"metric_{m}" in group]
    if metrics:
        cols = min(3, len(metrics))
        rows = -(-len(metrics) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
        for ax, name in zip(axes.ravel(), metrics, strict=False):
            data = [np.asarray(array(group, f"metric_{name}")[names.index(m)]) for m in methods]
            data.append(np.asarray(array(group, f"random_{name}")[:]))
            data = [d[np.isfinite(d)] for d in data]
            keep = [(lab, d) for lab, d in zip([*methods, "random"], data, strict=True) if d.size]
            if keep:
                ax.boxplot([d for _, d in keep], showfliers=False, **_horizontal())
                ax.set_yticks(range(1, len(keep) + 1), [lab for lab, _ in keep], fontsize=7)
            better = "higher" if METRICS[name].higher_is_better else "lower"
            ax.set_title(f"{name} ({better} is better)", fontsize=9)
        for ax in axes.ravel()[len(metrics):]:
            ax.axis("off")
        fig.tight_layout()
        out["plots/metrics.png"] = rp.figure_png(fig)
    curves = [m for m in metrics if f"curve_{m}" in group]
    if curves:
        fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.4), squeeze=False)
        for ax, name in zip(axes.ravel(), curves, strict=True):
            arr = np.asarray(array(group, f"curve_{name}")[:])
            x = np.linspace(0, 1, arr.shape[-1])
            for m in methods:
                c = arr[names.index(m)]
                c = c[np.isfinite(c).all(axis=1)]
                if len(c):
                    ax.plot(x, c.mean(axis=0), label=m)
            r = np.asarray(array(group, f"random_curve_{name}")[:])
            r = r[np.isfinite(r).all(axis=1)]
            if len(r):
                ax.plot(x, r.mean(axis=0), "k--", label="random")
            ax.set_title(f"mean {name} curve", fontsize=9)
            ax.set_xlabel("fraction of pixels")
            ax.set_ylabel("target probability")
            ax.legend(fontsize=7)
        fig.tight_layout()
        out["plots/curves.png"] = rp.figure_png(fig)
    return out


def _horizontal() -> dict[str, Any]:
    """Matplotlib's keyword for horizontal box plots (``vert`` is deprecated since 3.11)."""
    import matplotlib

    major, minor = (int(v) for v in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def missing_stages(cfg: Config, planned: Mapping[str, Sequence[Any]], records: Any,
                   hashes: Mapping[tuple[str, str | None], str]) -> list[str]:
    """The report's input stages with units not complete under this config."""
    out = []
    inputs = upstream("report")
    for name, units in planned.items():
        if name not in inputs or not units:
            continue
        left = sum(1 for u in units if not records.is_done(u.key, hashes[(u.stage, u.method)]))
        if left:
            out.append(f"{name} ({left} of {len(units)} units missing)")
    return out


def _notes(attrs: Mapping[str, Any], missing: Sequence[str], ok: int, n: int) -> list[str]:
    notes = []
    if attrs.get("random_weights"):
        notes.append(str(attrs.get("warning") or "RANDOM WEIGHTS: the maps say nothing about "
                                                 "a real model."))
    if missing:
        notes.append("Stages missing, so some maps or scores are absent: " + "; ".join(missing)
                     + ". Run `xai run` with the same options to complete them.")
    if n and ok == 0 and not any(m.startswith("ingest") for m in missing):
        notes.append(f"All {n} images were skipped: there is nothing to explain. Each card "
                     "says why.")
    return notes


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def summary_page(cfg: Config, attrs: Mapping[str, Any], summary: Mapping[str, Any] | None,
                 evaluation: Mapping[str, Any], notes: Sequence[str], plots: Sequence[str],
                 counts: Mapping[str, int], skipped: Sequence[tuple[str, str]]) -> str:
    """``summary.html``: run facts, stage timings, completeness, metrics, plots."""
    e = rp.esc
    parts = []
    for note in notes:
        parts.append(f'<div class="banner bad">{e(note)}</div>')
    report = attrs.get("model_report") or {}
    facts = [
        ("dataset", cfg.dataset.name), ("layout", cfg.dataset.layout),
        ("images", f"{counts['images']} ({counts['ok']} explained, {counts['skipped']} "
                   "skipped)"),
        ("weights", attrs.get("weights_id", "")),
        ("random weights", "YES: the maps are meaningless" if attrs.get("random_weights")
         else "no"),
        ("model", "; ".join(f"{k}: {v}" for k, v in report.items()
                            if k in ("accuracy", "seconds", "key", "note")) or "—"),
        ("head", attrs.get("head", "")), ("precision", attrs.get("precision", "")),
        ("device", attrs.get("device", "")), ("target", attrs.get("target", "")),
        ("methods", ", ".join(cfg.method_names)),
        ("config hash", attrs.get("config_hash", "")),
        ("config file", str(cfg.source or "")),
    ]
    parts.append("<h2>Run</h2>" + rp.table(facts))
    versions = attrs.get("package_versions") or {}
    if versions:
        parts.append("<h2>Package versions</h2>" + rp.table(sorted(versions.items())))
    if summary and summary.get("stages"):
        rows = [(s["stage"], f"{s['units_run']}/{s['units_total']}", s["images"],
                 _fmt(s["seconds"]), _fmt(s.get("img_per_s")), ", ".join(s["workers"]))
                for s in summary["stages"]]
        parts.append("<h2>Stage timings</h2>"
                     f"<p class=muted>Whole run: {_fmt(summary.get('seconds'))} s "
                     f"(stages add up to {_fmt(summary.get('sum_of_stage_seconds'))} s; "
                     "they overlap when streaming).</p>"
                     + rp.table(rows, ["stage", "units run", "images", "seconds", "img/s",
                                       "workers"]))
    comp = (summary or {}).get("completeness") or []
    if comp:
        rows = [(c["method"], c["images"], f"{100 * c['median']:.3g}%",
                 f"{100 * c['worst']:.3g}%", c["worst_image"], len(c["flagged"]))
                for c in comp]
        parts.append("<h2>Completeness of the Integrated Gradients methods</h2>"
                     + rp.table(rows, ["method", "images", "median error", "worst error",
                                       "worst image", "above the warning"]))
    if evaluation.get("metrics"):
        rows = []
        for name, entry in evaluation["metrics"].items():
            for m, b in [*entry["methods"].items(), ("random maps", entry["random"])]:
                ci = "—" if b["mean"] is None else \
                    f"{b['mean']:.4g} [{b['low']:.4g}, {b['high']:.4g}]"
                rows.append((name, entry["better"], m, ci, b["n"]))
        parts.append("<h2>Evaluation</h2><p class=muted>Means with 95% bootstrap intervals; "
                     "random maps are the floor.</p>"
                     + rp.table(rows, ["metric", "better", "method", "mean [95% CI]",
                                       "images"]))
        for note in evaluation.get("notes", []):
            parts.append(f"<p class=muted>{e(note)}</p>")
    if plots:
        parts.append("<h2>Plots</h2><div class=plots>" + "".join(
            f'<p><img src="{e(p)}" alt="{e(Path(p).stem)}"></p>' for p in plots) + "</div>")
    if skipped:
        shown = skipped[:500]
        parts.append(f"<h2>Skipped images ({len(skipped)})</h2>"
                     + rp.table(shown, ["image", "reason"])
                     + (f"<p class=muted>… and {len(skipped) - 500} more.</p>"
                        if len(skipped) > 500 else ""))
    return rp.page(f"{cfg.dataset.name}: summary", "summary.html", "".join(parts))


def strategies_page(cfg: Config, clusters: Mapping[str, list[Cluster]], facts: Mapping[str, Any],
                    classes: Sequence[str], shard_size: int, notes: Sequence[str]) -> str:
    """``strategies.html``: per method and predicted class, each cluster's mean map, size and
    a few members."""
    e = rp.esc
    rc = cfg.report
    parts = [rp.svg_filters([], default=cfg.render.colormap)]
    parts += [f'<div class="banner bad">{e(n)}</div>' for n in notes]
    parts.append(
        "<p>Explanation strategies (SpRAy, Lapuschkin et al. 2019): for each predicted class "
        f"with at least {rc.min_images} explained images, the normalized maps are downsampled "
        f"to {rc.downsample}×{rc.downsample}, joined to their {rc.neighbors} nearest "
        "neighbours, and clustered spectrally; the cluster count is where the Laplacian's "
        f"eigenvalues jump the most (at most {rc.max_clusters}). A class with two clusters "
        "is explained in two different ways: look for the one that is not the object. The "
        "store's <code>strategy</code> array holds every image's cluster.</p>")
    if facts.get("note"):
        parts.append(f"<p class=muted>{e(facts['note'])}</p>")
    purity = facts.get("purity") or {}
    if purity:
        rows = [(m, classes[p["class"]] if p["class"] < len(classes) else p["class"],
                 p["images"], p["watermarked"], p["clusters"],
                 f"{p['purity']:.3f}") for m, p in purity.items()]
        parts.append("<h2>Planted shortcut</h2><p>This dataset plants a watermark shortcut in "
                     "one class; the purity is how well the clusters separate the watermarked "
                     "images from the others (1 = perfectly).</p>"
                     + rp.table(rows, ["method", "class", "images", "watermarked",
                                       "clusters", "purity"]))
    any_cluster = False
    for j, m in enumerate(cfg.method_names):
        found = clusters.get(m, [])
        if not found:
            continue
        any_cluster = True
        parts.append(f'<section class=method><h2>{e(m)}</h2>')
        by_class: dict[int, list[Cluster]] = {}
        for cl in found:
            by_class.setdefault(cl.cls, []).append(cl)
        for c, cls_clusters in sorted(by_class.items(), key=_class_order(cfg.shortcut().label)):
            total = sum(len(x.members) for x in cls_clusters)
            parts.append(f"<section class=cls><h3>{e(classes[c] if c < len(classes) else c)}"
                         f" <span class=muted>({total} images, {len(cls_clusters)} "
                         f"cluster{'s' if len(cls_clusters) > 1 else ''})</span></h3>"
                         "<div class=clusters>")
            for cl in cls_clusters:
                mean = f"img/s/m{j}/c{c}-{cl.number}.png"
                wm = "" if cl.watermark is None else \
                    f", {cl.watermark} with the watermark"
                members = "".join(
                    f'<img loading=lazy src="{rp.map_path(j, i // shard_size, i)}" '
                    f'alt="image {i + 1}" title="image {i + 1}">'
                    for i in cl.members[:rc.members])
                crops = "".join(
                    f'<img loading=lazy src="{rp.crop_path(i // shard_size, i)}" '
                    f'alt="image {i + 1}" title="image {i + 1}">'
                    for i in cl.members[:rc.members])
                parts.append(
                    f'<div class=cluster><b>cluster {cl.number}</b>: {len(cl.members)} '
                    f"images{e(wm)}<br><img class=mean src=\"{mean}\" alt=\"mean map\">"
                    f"<div class=members>{crops}</div><div class=\"members maps\">{members}"
                    "</div></div>")
            parts.append("</div></section>")
        parts.append("</section>")
    if not any_cluster and not facts.get("note"):
        parts.append(f"<p class=muted>No predicted class has {rc.min_images} or more "
                     "explained images, so nothing was clustered ([report] min_images).</p>")
    return rp.page(f"{cfg.dataset.name}: explanation strategies", "strategies.html",
                   "".join(parts))


def _class_order(planted: int) -> Any:
    """Sort key: the planted shortcut's class first, then classes with more strategies, then
    bigger ones."""
    def key(kv: tuple[int, list[Cluster]]) -> tuple[bool, int, int]:
        return (kv[0] != planted, -len(kv[1]), -sum(len(x.members) for x in kv[1]))
    return key


def _mean_maps(clusters: Mapping[str, list[Cluster]], cfg: Config) -> dict[str, bytes]:
    out = {}
    for j, m in enumerate(cfg.method_names):
        for cl in clusters.get(m, []):
            out[f"img/s/m{j}/c{cl.cls}-{cl.number}.png"] = rp.mean_map_png(
                cl.mean, cfg.report.downsample, cfg.render.colormap)
    return out


def build_stamp(report_hash: str, records: Any, units: Sequence[Any]) -> str:
    """What a report is built from: the stage's hash and its shards' record checksums. A
    report whose stamp differs (its build was killed after the shards were recorded, say)
    is built again."""
    from workflows.config import stable_hash

    return stable_hash([report_hash, [(u.key, (records.get(u.key) or {}).get("checksum"))
                                      for u in units]])


def current_stamp(run_dir: Path) -> str | None:
    data = read_json(run_dir / REPORT / STAMP)
    return data.get("stamp") if isinstance(data, dict) else None


def build_report(group: Any, cfg: Config, run_dir: Path, units: Sequence[Any],
                 missing: Sequence[str], summary: Mapping[str, Any] | None,
                 evaluation: Mapping[str, Any], skipped: Sequence[tuple[str, str]],
                 stamp: str = "") -> dict[str, Any]:
    """Cluster, write the pages and publish ``<run>/report/``; return facts for the
    summary (``path``, ``seconds``, ``strategy_classes``, ``shortcut_purity``, ``missing``)."""
    t0 = time.perf_counter()
    target = run_dir / REPORT
    n = array(group, "image").shape[0]
    attrs = dict(group.attrs)
    classes = list(attrs.get("classes") or [])
    clusters, labels, facts = compute_strategies(group, cfg, run_dir, units)
    with disk_errors(run_dir / "store.zarr"):
        write_strategy_array(group, cfg, labels)
    ok = n - len(skipped)
    notes = _notes(attrs, missing, ok, n)
    plots = _plots(group, cfg)
    colormaps = list(dict.fromkeys([cfg.render.colormap, *rp.COLORMAPS]))
    from pipeline.methods import METHODS
    from pipeline.metrics import METRICS

    strategy_data = {"methods": {m: labels[j].tolist() for j, m in enumerate(cfg.method_names)
                                 if clusters.get(m)}}
    manifest = {
        "title": f"{cfg.dataset.name}: {n} images", "dataset": cfg.dataset.name,
        "images": n, "classes": classes, "colormaps": colormaps,
        "colormap": cfg.render.colormap, "target": cfg.run.target, "notes": notes,
        "bad": bool(attrs.get("random_weights") or missing),
        "methods": [{"name": m, "ig": bool(METHODS[m].has_delta)} for m in cfg.method_names],
        "metrics": [{"name": m, "higher": METRICS[m].higher_is_better}
                    for m in cfg.evaluate.metrics if f"metric_{m}" in group],
        "shards": [{"index": u.index, "file": rp.shard_data_path(u.index)} for u in units
                   if part_data(run_dir, u.index).is_file()],
        "strategies": "data/strategies.js" if strategy_data["methods"] else None,
    }
    files: dict[str, bytes | str] = {
        "index.html": rp.gallery_html(manifest["title"], colormaps),
        "summary.html": summary_page(cfg, attrs, summary, evaluation, notes, sorted(plots),
                                     {"images": n, "ok": ok, "skipped": len(skipped)},
                                     skipped),
        "strategies.html": strategies_page(cfg, clusters, facts, classes, cfg.run.shard_size,
                                           notes),
        "data/manifest.js": rp.data_script("XAI_MANIFEST", manifest),
        "data/strategies.js": rp.data_script("XAI_STRATEGIES", strategy_data),
        STAMP: json.dumps({"stamp": stamp}),
        **plots, **_mean_maps(clusters, cfg),
    }
    with disk_errors(run_dir):
        build = rp.build_folder(target)
        try:
            parts = parts_dir(run_dir)
            (build / "data").mkdir(parents=True, exist_ok=True)
            for shard in manifest["shards"]:  # this run's shards and methods only
                rp.link_tree_file(parts / shard["file"], build / shard["file"])
                folders = ["c", *(f"m{j}" for j in range(len(cfg.method_names)))]
                for f in folders:
                    src = parts / "img" / f / f"{shard['index']:06d}"
                    if src.is_dir():
                        rp.link_tree(src, build / "img" / f / src.name)
            rp.write_files(build, files)
            rp.copy_assets(build)
            faults.point("report:before-publish")
            rp.publish(build, target)
        except BaseException:
            rp.remove(build)
            raise
    purity = {m: p["purity"] for m, p in facts.get("purity", {}).items()}
    return {"path": str(target / "index.html"), "seconds": round(time.perf_counter() - t0, 3),
            "strategy_classes": facts.get("classes", 0), "shortcut_purity": purity,
            "missing": list(missing)}


def previous_summary(run_dir: Path) -> dict[str, Any] | None:
    """The last full run's ``summary.json`` (for a report built on its own)."""
    data = read_json(run_dir / "summary.json")
    return data if isinstance(data, dict) else None


__all__ = ["build_report", "missing_stages", "previous_summary", "report_shard"]
