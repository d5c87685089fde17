"""``report``: a static HTML report of the run, in ``<run>/report/``.

Per shard (incremental: only shards whose inputs changed are rebuilt), into
``<run>/report-parts/``: the crops (JPEG), the grey-level maps per method (PNG) and the mask
outlines, each as sprites (a shard's tiles in one file, :mod:`pipeline.report.sprites`), the
rows the gallery shows (``data/shard-NNNNNN.js``, :func:`pipeline.report.gallery_page.
gallery_row`), and the downsampled maps the explanation strategies are clustered from
(``features/shard-NNNNNN.npy``).

Then, in :meth:`Report.finalize`: the explanation strategies (SpRAy,
:mod:`pipeline.evaluation.spray`) per class and method, written to the store's ``strategy``
array; the pages (:mod:`pipeline.report`) and their plots (:mod:`pipeline.render.figures`);
and the folder, assembled from the parts (hard links) in a private folder and published in
one step (:func:`pipeline.report.publishing.assemble`), so a killed build leaves the old
report or the new one.

This module only gathers what the pages show from the store and the config, and orchestrates;
the pages, tiles and folder are :mod:`pipeline.report`'s.

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

from pipeline.evaluation.spray import Cluster
from pipeline.file_io import write_atomic
from pipeline.report.data_scripts import data_script, finite, shard_data_path
from pipeline.report.gallery_page import (
    COLORMAPS,
    MethodEntry,
    MetricEntry,
    gallery_html,
    gallery_row,
    manifest,
)
from pipeline.report.publishing import assemble, recover
from pipeline.report.run_facts import banner_notes, run_facts
from pipeline.report.sprites import SPRITES_CSS, Sprites, sprite_tiles
from pipeline.report.strategies_page import StrategySettings, mean_maps, strategies_page
from pipeline.report.summary_page import summary_page
from pipeline.report.templating import counted
from pipeline.report.tile_files import grey_levels, outline_rgba, sprite_files
from pipeline.report.verdicts import SANITY_THRESHOLD
from pipeline.store.access import explainers
from pipeline.store.arrays import array
from workflows.config.hashing import stable_hash
from workflows.config.run_config import Config
from workflows.runner import fault_injection as faults
from workflows.runner.disk_writes import atomic_write_bytes, disk_errors, read_json
from workflows.runner.run_summary import degeneracy_summary, process_seconds, top1_accuracy
from workflows.runner.stage_api import (
    Context,
    Stage,
    Task,
    Unit,
    done,
    explained_status,
    open_view,
    register_stage,
    sheet_style,
)

PARTS = "report-parts"
REPORT = "report"
#: The status shown for an image whose ingest has not run yet.
NOT_INGESTED = "not ingested yet (the ingest stage is missing)"
#: Written into the report folder: what it was built from (see :func:`build_stamp`).
STAMP = "data/build.json"


def parts_dir(run_dir: Path | str) -> Path:
    """The per-shard parts the report is assembled from."""
    return Path(run_dir) / PARTS


def part_data(run_dir: Path | str, index: int) -> Path:
    """A shard's gallery rows; written last, so it is the unit's output file."""
    return parts_dir(run_dir) / shard_data_path(index)


def part_features(run_dir: Path | str, index: int) -> Path:
    """A shard's downsampled maps ``(M, N_shard, downsample ** 2)``, for the strategies."""
    return parts_dir(run_dir) / "features" / f"shard-{index:06d}.npy"


@register_stage
class Report(Stage):
    name = "report"
    reads = ("image", "status", "pixels", "mask", "pred", "prob", "label", "normalized", "delta",
             "gap", "metric_", "random_", "curve_", "random_curve_", "randomisation")
    writes = ("strategy",)
    partial_inputs = True
    output_dirs = (PARTS, REPORT)
    doc = "the static HTML report report/index.html: gallery, summary, explanation strategies"
    how_to_enable = "set [report] enabled = true"

    def enabled(self, cfg: Config) -> bool:
        return cfg.report.enabled

    def depends(self, cfg: Config, method: str | None, weights_id: str) -> Any:
        r = cfg.render
        # 3: tiles in sprites, a file per shard and kind (2: a file per image and kind).
        return {"version": 3, "target": cfg.run.target, "methods": list(cfg.method_names),
                "clip_percentile": r.clip_percentile, "downsample": cfg.report.downsample,
                "metrics": list(cfg.evaluate.metrics)}

    def output_file(self, run_dir: Path, unit: Unit) -> Path:
        return part_data(run_dir, unit.index)

    def run(self, task: Task) -> dict[str, Any]:
        return report_shard(task)

    def remove_stale(self, run_dir: Path, valid: set[int]) -> int:
        """Delete the parts of shards without a current record (a changed shard size, a
        shard built from incomplete inputs): they are rebuilt."""
        removed = 0
        root = parts_dir(run_dir)
        for path in (root / "img").glob("*/*") if (root / "img").is_dir() else []:
            if path.is_dir() and path.name.isdigit():  # a tile a file: before sprites
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
            elif path.is_file() and path.name[:6].isdigit() and int(path.name[:6]) not in valid:
                path.unlink(missing_ok=True)
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

    def finalize(self, ctx: Context) -> dict[str, Any] | None:
        """Build the report when any of its shards ran, when it is asked for alone, or when
        the published one was built from other shards (a killed build); else keep it."""
        units = ctx.planned.get(self.name) or []
        if not units:
            return None
        recover(ctx.run_dir / REPORT)  # what a killed build left
        stamp = build_stamp(ctx.hashes[(self.name, None)], ctx.records, units)
        if not (ctx.pending.get(self.name) or ctx.only == self.name
                or current_stamp(ctx.run_dir) != stamp):
            return None
        n = array(ctx.group, "image").shape[0]
        missing = missing_stages(ctx, n)
        facts = ({**ctx.summary.to_dict(), "seconds_when_built": round(process_seconds(), 1)}
                 if ctx.only is None else previous_summary(ctx.run_dir))
        ctx.reporter.info("report: clustering the maps and writing the pages")
        skipped = [(i, reason) for i, reason in ctx.summary.skipped if reason]  # "": not yet
        return build_report(ctx.group, ctx.cfg, ctx.run_dir, units, missing, facts,
                            evaluation_of(ctx), skipped, stamp)


def evaluation_of(ctx: Context) -> dict[str, Any]:
    """The evaluation summary the pages show (the one place the report reads it): what the
    evaluate stage's finalize returned in this process, else its ``evaluation.json`` when
    evaluate is on, else empty. Its shape: ``metrics[name]`` with ``better``,
    ``description``, ``methods[method]`` and ``random`` (``mean``, ``low``, ``high``, ``n``);
    ``randomisation[method][layer group]`` (the same statistics); ``notes``."""
    found = ctx.outputs.get("evaluate")
    if isinstance(found, Mapping) and found:
        return dict(found)
    if not ctx.cfg.evaluate.metrics:
        return {}
    data = read_json(ctx.run_dir / "evaluation.json")
    return data if isinstance(data, dict) else {}


def method_signs(cfg: Config) -> dict[str, str]:
    """How each of the run's methods' maps (the stored ``aggregated``, which the metrics
    score) treat negative attribution: ``"absolute"`` where the method takes ``|·|``
    (its ``absolute`` parameter is true), ``"non-negative"`` for a layer map
    (Grad-CAM keeps the positive part), else ``"signed"``."""
    from pipeline.attribution.method_registry import METHODS

    out = {}
    for m in cfg.method_names:
        spec, params = METHODS[m], cfg.methods.get(m) or {}
        named = spec.canonical(params)
        if "absolute" in named:
            out[m] = "absolute" if named["absolute"] else "signed"
        else:
            out[m] = "non-negative" if spec.space == "layer" else "signed"
    return out


def _write(path: Path, data: bytes) -> None:
    """Temp name + rename, without fsync (thousands of tiles; a torn one is rebuilt, since
    the shard is recorded only after all of them)."""
    write_atomic(path, data, fsync=False)


def _metric_names(group: Any, cfg: Config) -> list[str]:
    return [m for m in cfg.evaluate.metrics if f"metric_{m}" in group]


def report_shard(task: Task) -> dict[str, Any]:
    """Crops, maps, rows and strategy features of one shard, into ``report-parts/``."""
    from pipeline.attribution.method_registry import METHODS, relative_completeness_error
    from pipeline.evaluation.spray import downsample
    from pipeline.render.heatmaps import display_values

    u, cfg = task.unit, task.cfg
    run_dir = Path(task.run_dir)
    missing = set(task.extra.get("missing", ()))  # "stage" or "stage/method" not complete
    store = open_view(task, mode="r")
    sl = slice(u.start, u.stop)
    data = store.rows(sl, "image", "status", "pred", "prob", "label", "pixels", "mask")
    ids, status = data["image"].tolist(), data["status"].tolist()
    pred, prob, label, pixels = data["pred"], data["prob"], data["label"], data["pixels"]
    masks = np.asarray(data["mask"], dtype=bool)
    methods = list(cfg.method_names)
    slots = [store.slot(m) for m in methods]
    maps = np.stack([store.read_maps("normalized", j, sl) for j in slots])  # (M, N, H, W)
    rel = np.stack([relative_completeness_error(store.array("delta")[j, sl],
                                                store.array("gap")[j, sl]) for j in slots])
    ig = [bool(METHODS[m].has_delta) for m in methods]
    metrics = _metric_names(store, cfg) if "evaluate" not in missing else []

    def lacks(stage: str, method: str | None = None) -> bool:
        return stage in missing or (method is not None and f"{stage}/{method}" in missing)

    # What an incomplete input would show is not current: leave it out.
    usable = [not (lacks("ingest") or lacks("predict") or lacks("attribute", m)
                   or lacks("normalize", m)) for m in methods]
    deltas_ok = [not (lacks("predict") or lacks("attribute", m)) for m in methods]
    scores = {m: np.stack([np.asarray(store.array(f"metric_{m}")[j, sl], dtype=np.float32)
                           for j in slots]) for m in metrics}
    for i, method in enumerate(methods):  # a method's evaluation not current: not shown
        if lacks("evaluate", method):
            for values in scores.values():
                values[i] = np.nan
    size = cfg.report.downsample
    style = dataclasses.replace(sheet_style(cfg), signed=False)
    features = np.full((len(methods), u.size, size * size), np.nan, dtype=np.float32)
    rows = []
    faults.point("report:before-write")
    px = int(np.asarray(pixels).shape[1])
    crops = np.zeros((u.size, px, px, 3), dtype=np.uint8)
    outlines = np.zeros((u.size, px, px, 4), dtype=np.uint8)
    greys = np.zeros((len(methods), u.size, px, px), dtype=np.uint8)
    with disk_errors(parts_dir(run_dir)):
        for k in range(u.size):
            i = u.start + k
            st = explained_status(str(status[k]), int(label[k]), cfg.run.target) \
                if status[k] else NOT_INGESTED
            ok = st == "ok"
            crop = str(status[k]) == "ok" and not lacks("ingest")
            if crop:
                crops[k] = pixels[k]
            outline = crop and bool(masks[k].any())
            if outline:
                outlines[k] = outline_rgba(masks[k])
            have = []
            for j in range(len(methods)):
                m = maps[j, k]
                good = ok and usable[j] and bool(np.isfinite(m).all())
                if good:
                    greys[j, k] = grey_levels(display_values(m, style))
                    features[j, k] = downsample(m[None], size)[0]
                have.append(good)
            rows.append(gallery_row(
                index=i, image_id=str(ids[k]), status=st, crop=crop, outline=outline,
                maps=have, pred=int(pred[k]), prob=finite(prob[k]), label=int(label[k]),
                deltas=[finite(rel[j, k]) if ig[j] and deltas_ok[j] else None
                        for j in range(len(methods))],
                scores={m: [finite(scores[m][j, k]) for j in range(len(methods))]
                        for m in metrics}))
        tiles = sprite_tiles(px, cfg.run.shard_size)
        for rel_path, content in sprite_files(u.index, tiles, rows, crops, outlines,
                                              greys).items():
            _write(parts_dir(run_dir) / rel_path, content)
        buf = io.BytesIO()
        np.save(buf, features)
        _write(part_features(run_dir, u.index), buf.getvalue())
        faults.point("report:mid-write")
        payload = {"index": u.index, "start": u.start, "stop": u.stop, "sprite": tiles,
                   "rows": rows, "missing": sorted(missing)}
        atomic_write_bytes(part_data(run_dir, u.index),
                           data_script("XAI_SHARDS", payload, append=True))
    result = done(task, store, file=part_data(run_dir, u.index).name)
    if missing:
        result["provisional"] = True
    return result


# ------------------------------------------------------------------------ strategies


def _load_features(run_dir: Path, units: Sequence[Unit], n_methods: int, size: int
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


def compute_strategies(group: Any, cfg: Config, run_dir: Path, units: Sequence[Unit],
                       ) -> tuple[dict[str, list[Cluster]], np.ndarray, dict[str, Any]]:
    """SpRAy per (method, class with at least ``min_images`` explained images).

    Returns the clusters per method, the ``(explainer, image)`` int16 cluster array (-1:
    not clustered) in the run's method order, and facts for the page (purity on a planted
    shortcut).
    """
    from pipeline.data.evidence_dataset import has_watermark
    from pipeline.evaluation.spray import purity, strategies

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
        done_ = np.isfinite(feats[j]).all(axis=1)
        for c in np.unique(pred[done_ & (pred >= 0)]):
            idx = np.flatnonzero(done_ & (pred == c))
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
    """The store's ``strategy`` (explainer, image), -1 where not clustered, in store slot
    order (``labels`` is in the run's method order)."""
    names = explainers(group)
    full = np.full((len(names), array(group, "image").shape[0]), -1, dtype=np.int16)
    for j, m in enumerate(cfg.method_names):
        if m in names:
            full[names.index(m)] = labels[j]
    array(group, "strategy")[:] = full


# ------------------------------------------------------------------------ the folder


def missing_stages(ctx: Context, n: int) -> list[str]:
    """The report's input stages with units not complete under this config."""
    out = []
    inputs = ctx.registry.upstream(Report.name)
    for stage in ctx.registry:
        if stage.name not in inputs:
            continue
        units = ctx.registry.units(stage, n, ctx.cfg)
        left = sum(1 for u in units
                   if not ctx.records.is_done(u.key, ctx.hashes[(u.stage, u.method)]))
        if left:
            out.append(f"{stage.name} ({left} of {counted(len(units), 'unit')} missing)")
    return out


#: The sanity section's figure, relative to the report folder.
SANITY_PLOT = "plots/randomisation.png"


def plots(group: Any, cfg: Config, run_dir: Path, evaluation: Mapping[str, Any]
          ) -> dict[str, bytes]:
    """``plots/*.png``: the completeness errors of the IG methods, and, when the run was
    evaluated, the evaluation figure (``evaluation.png``, which the evaluate stage has just
    drawn) and the randomisation curves of the sanity section (:data:`SANITY_PLOT`)."""
    from pipeline.attribution.method_registry import METHODS, relative_completeness_error
    from pipeline.render.figures import completeness_figure, png, randomisation_figure

    names = explainers(group)
    ig = [m for m in cfg.method_names if m in names and METHODS[m].has_delta]
    out: dict[str, bytes] = {}
    if ig and "gap" in group:
        errors = {m: relative_completeness_error(array(group, "delta")[names.index(m)],
                                                 array(group, "gap")[names.index(m)])
                  for m in ig}
        fig = completeness_figure(errors, cfg.run.completeness_warning)
        if fig is not None:
            out["plots/completeness.png"] = png(fig)
    figure = run_dir / "evaluation.png"
    if evaluation.get("metrics") and figure.is_file():
        out["plots/evaluation.png"] = figure.read_bytes()
    sanity = randomisation_figure(evaluation.get("randomisation") or {}, SANITY_THRESHOLD)
    if sanity is not None:
        out[SANITY_PLOT] = png(sanity)
    return out


def build_stamp(report_hash: str, records: Any, units: Sequence[Unit]) -> str:
    """What a report is built from: the stage's hash and its shards' record checksums. A
    report whose stamp differs (its build was killed after the shards were recorded, say)
    is built again."""
    return stable_hash([report_hash, [(u.key, (records.get(u.key) or {}).get("checksum"))
                                      for u in units]])


def current_stamp(run_dir: Path) -> str | None:
    data = read_json(run_dir / REPORT / STAMP)
    return data.get("stamp") if isinstance(data, dict) else None


def build_report(group: Any, cfg: Config, run_dir: Path, units: Sequence[Unit],
                 missing: Sequence[str], summary: Mapping[str, Any] | None,
                 evaluation: Mapping[str, Any], skipped: Sequence[tuple[str, str]],
                 stamp: str = "") -> dict[str, Any]:
    """Cluster, write the pages and publish ``<run>/report/``; return facts for the
    summary (``path``, ``seconds``, ``strategy_classes``, ``shortcut_purity``, ``missing``)."""
    from pipeline.attribution.method_registry import METHODS
    from pipeline.evaluation.metrics import METRICS

    t0 = time.perf_counter()
    target = run_dir / REPORT
    n = array(group, "image").shape[0]
    attrs = dict(group.attrs)
    classes = list(attrs.get("classes") or [])
    methods = list(cfg.method_names)
    clusters, labels, facts = compute_strategies(group, cfg, run_dir, units)
    with disk_errors(run_dir / "store.zarr"):
        write_strategy_array(group, cfg, labels)
    ok = n - len(skipped)
    degenerate = degeneracy_summary(group, run_dir / "store.zarr", methods)
    notes = banner_notes(attrs, missing, ok, n, [d["message"] for d in degenerate])
    figures = plots(group, cfg, run_dir, evaluation)
    signs = method_signs(cfg)
    sanity_plot = SANITY_PLOT if SANITY_PLOT in figures else None
    colormaps = list(dict.fromkeys([cfg.render.colormap, *COLORMAPS]))
    strategy_data = {"methods": {m: labels[j].tolist() for j, m in enumerate(methods)
                                 if clusters.get(m)}}
    gallery = manifest(
        title=f"{cfg.dataset.name}: {counted(n, 'image')}", dataset=cfg.dataset.name, images=n,
        classes=classes, colormaps=colormaps, colormap=cfg.render.colormap,
        target=cfg.run.target, notes=notes,
        bad=bool(attrs.get("random_weights") or missing or degenerate),
        methods=[MethodEntry(m, bool(METHODS[m].has_delta), signs[m]) for m in methods],
        metrics=[MetricEntry(m, METRICS[m].higher_is_better, METRICS[m].description)
                 for m in cfg.evaluate.metrics if f"metric_{m}" in group],
        shards=[{"index": u.index, "file": shard_data_path(u.index)} for u in units
                if part_data(run_dir, u.index).is_file()],
        strategies="data/strategies.js" if strategy_data["methods"] else None)
    facts_rows = run_facts(dataset=cfg.dataset.name,
                           layout=(summary or {}).get("layout") or cfg.dataset.layout,
                           methods=methods, config_file=str(cfg.source or ""), attrs=attrs,
                           images=n, ok=ok, skipped=len(skipped),
                           accuracy=top1_accuracy(group),
                           labelled=(summary or {}).get("labelled"))
    rc = cfg.report
    settings = StrategySettings(rc.min_images, rc.downsample, rc.neighbors, rc.max_clusters,
                                rc.members)
    sprites = Sprites(cfg.run.shard_size, n, cfg.dataset.crop)
    files: dict[str, bytes | str] = {
        "index.html": gallery_html(gallery["title"], colormaps),
        "summary.html": summary_page(
            cfg.dataset.name, facts_rows, attrs.get("package_versions") or {}, summary,
            evaluation, notes, sorted(f for f in figures if f != SANITY_PLOT), skipped, signs,
            sanity_plot, comparison_links(run_dir)),
        "strategies.html": strategies_page(
            cfg.dataset.name, clusters, facts, methods, classes, sprites, notes,
            settings, cfg.render.colormap, cfg.shortcut().label),
        "data/manifest.js": data_script("XAI_MANIFEST", gallery),
        SPRITES_CSS: sprites.css(),
        "data/strategies.js": data_script("XAI_STRATEGIES", strategy_data),
        STAMP: json.dumps({"stamp": stamp}),
        **figures, **mean_maps(clusters, methods, rc.downsample, cfg.render.colormap),
    }
    with disk_errors(run_dir):
        assemble(parts_dir(run_dir), target, gallery["shards"], len(methods), files,
                 before_publish=lambda: faults.point("report:before-publish"))
    purity = {m: p["purity"] for m, p in facts.get("purity", {}).items()}
    return {"path": str(target / "index.html"), "seconds": round(time.perf_counter() - t0, 3),
            "strategy_classes": facts.get("classes", 0), "shortcut_purity": purity,
            "missing": list(missing)}


def comparison_links(run_dir: Path) -> list[tuple[str, str]]:
    """``(href, text)`` of each comparison made from the run whose report is still there
    (``xai compare`` lists them in ``<run>/comparisons.json``); the links are relative to
    the report, so that the folders keep working when moved together."""
    import os

    data = read_json(run_dir / "comparisons.json")
    out = []
    for entry in data if isinstance(data, list) else []:
        if not isinstance(entry, dict):
            continue
        page = Path(str(entry.get("path", ""))) / "report" / "index.html"
        if page.is_file():
            side = "A" if entry.get("as") == "A" else "B"
            other = Path(str(entry.get("other", "")))
            text = ("this run against itself" if other == run_dir.resolve()
                    else f"this run as {side}, against {other.name}")
            out.append((os.path.relpath(page, run_dir / REPORT), text))
    return out


def previous_summary(run_dir: Path) -> dict[str, Any] | None:
    """The last full run's ``summary.json`` (for a report built on its own)."""
    data = read_json(run_dir / "summary.json")
    return data if isinstance(data, dict) else None
