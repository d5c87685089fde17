"""The comparison's report pages (``<out>/report/``): gathered here from the comparison
store and both runs, built by :mod:`pipeline.report.comparison_pages`, published in one step
as the run report is (:mod:`pipeline.report.publishing`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from pipeline.comparison.reading import read_maps, read_rows
from pipeline.report.comparison_pages import (
    STYLESHEET,
    ClassSection,
    GalleryItem,
    fmt,
    gallery_page,
    map_tiles,
    overview_page,
    strategies_page,
    stylesheet,
)
from pipeline.report.publishing import build_folder, copy_assets, publish, write_files
from pipeline.report.templating import counted
from pipeline.report.tile_files import crop_jpeg

#: Classes per table that get mean-map tiles (the most changed; the store has them all).
CLASS_TILES = 12
COLORMAP = "inferno"


def notes_of(cmp: Any) -> list[str]:
    """The banners every page shows: random weights or degenerate output in either run, a
    test that cannot flag any class, images left out."""
    notes = []
    for side, run in (("A", cmp.a), ("B", cmp.b)):
        notes += [f"Run {side}: {flag}" for flag in run.flags]
    notes += cmp.warnings
    if cmp.match.only_a or cmp.match.only_b:
        notes.append(f"Only the images both runs hold are compared: left out "
                     f"{counted(cmp.match.only_a, 'image')} only in A and "
                     f"{cmp.match.only_b} only in B.")
    return notes


def facts_of(cmp: Any, summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The overview's first table."""
    skipped = summary["skipped_explainers"]
    rows = [("A", str(cmp.a.path)), ("B", str(cmp.b.path)),
            ("images compared", str(summary["images"])),
            ("methods compared", ", ".join(cmp.explainers)),
            ("metrics side by side", ", ".join(cmp.metrics) or "none both runs evaluated")]
    for side in ("a", "b"):
        if skipped[side]:
            rows.append((f"methods only in {side.upper()} (not compared)",
                         ", ".join(skipped[side])))
    rows.append(("store", str(cmp.store_path)))
    return rows


def class_sections(cmp: Any, group: zarr.Group, summary: Mapping[str, Any],
                   files: dict[str, bytes | str]) -> list[ClassSection]:
    """Per grouping and method: the class table, with mean-map tiles for the first
    :data:`CLASS_TILES` rows (added to ``files``)."""
    sections = []
    for grouping, per_method in summary["classes"].items():
        prefix = "" if grouping == "pred" else "label_"
        by = "predicted by A" if grouping == "pred" else "by label"
        for j, m in enumerate(cmp.explainers):
            rows = []
            for k, r in enumerate(per_method[m]):
                maps: list[tuple[str, str]] = []
                if k < CLASS_TILES:
                    path = f"img/{grouping}/{j}-{r['index']}"
                    a = np.asarray(group[prefix + "mean_a"][j, r["index"]])
                    b = np.asarray(group[prefix + "mean_b"][j, r["index"]])
                    # Mean maps are dimmer than single maps: each on its own 0..max scale.
                    top = float(np.nanmax(np.concatenate([a.ravel(), b.ravel()]),
                                          initial=0.0)) or 1.0
                    files.update(map_tiles(path, a / top, b / top, COLORMAP))
                    maps = [(f"{path}-a.png", f"{r['class']}: A"),
                            (f"{path}-b.png", f"{r['class']}: B"),
                            (f"{path}-d.png", f"{r['class']}: B − A")]
                rows.append({"rank": r["rank"], "name": r["class"], "images": r["images"],
                             "score": fmt(r["score"]), "statistic": fmt(r["statistic"]),
                             "excess": fmt(r["excess"]),
                             "p_value": fmt(r["p_value"]), "p_adjusted": fmt(r["p_adjusted"]),
                             "changed": r["changed"], "maps": maps})
            sections.append(ClassSection(f"{m}, classes {by}", rows,
                                         sum(r["changed"] for r in rows)))
    return sections


def _sorted_read(read: Any, rows: np.ndarray) -> np.ndarray:
    """``read(rows)`` for rows in any order: read in ascending order, then put back."""
    order = np.argsort(rows, kind="stable")
    got = read(rows[order])
    out = np.empty_like(got)
    out[order] = got
    return out


def gallery_sections(cmp: Any, group: zarr.Group, files: dict[str, bytes | str]
                     ) -> list[dict[str, Any]]:
    """Per method, the most changed images (lowest Spearman), with their tiles."""
    n_show = cmp.settings.gallery
    rho_all = np.asarray(group["spearman"][:], dtype=np.float64)
    iou_all = np.asarray(group["iou"][:], dtype=np.float64)
    pred_a = np.asarray(group["pred_a"][:])
    pred_b = np.asarray(group["pred_b"][:])
    changed = np.asarray(group["pred_changed"][:])
    ids = cmp.match.ids
    sections = []
    for j, m in enumerate(cmp.explainers):
        change = 1.0 - rho_all[j]
        have = np.flatnonzero(np.isfinite(change))
        chosen = have[np.argsort(-change[have], kind="stable")][:n_show]
        items: list[GalleryItem] = []
        if len(chosen):
            rows_a, rows_b = cmp.match.rows_a[chosen], cmp.match.rows_b[chosen]
            slot_a, slot_b = cmp.a.view.slot(m), cmp.b.view.slot(m)
            maps_a = _sorted_read(partial(read_maps, cmp.a.view, slot_a), rows_a)
            maps_b = _sorted_read(partial(read_maps, cmp.b.view, slot_b), rows_b)
            photos = (_sorted_read(partial(read_rows, cmp.a.view.array("pixels")), rows_a)
                      if "pixels" in cmp.a.view else None)
            for k, i in enumerate(chosen):
                path = f"img/gallery/{j}-{i}"
                tiles = []
                if photos is not None:
                    files[f"{path}-photo.jpg"] = crop_jpeg(photos[k])
                    tiles.append((f"{path}-photo.jpg", f"{ids[i]}: photo"))
                files.update(map_tiles(path, maps_a[k], maps_b[k], COLORMAP, diff_scale=1.0))
                tiles += [(f"{path}-a.png", f"{ids[i]}: A"), (f"{path}-b.png", f"{ids[i]}: B"),
                          (f"{path}-d.png", f"{ids[i]}: B − A")]
                items.append(GalleryItem(
                    ids[i], fmt(float(change[i])), fmt(float(iou_all[j, i])),
                    _class(cmp.a.classes, int(pred_a[i])), _class(cmp.b.classes, int(pred_b[i])),
                    bool(changed[i]), tiles))
        sections.append({"name": m, "entries": items})
    return sections


def _class(classes: Sequence[str], index: int) -> str:
    return classes[index] if 0 <= index < len(classes) else "–"


def write_report(cmp: Any, summary: Mapping[str, Any]) -> Path:
    """Build and publish ``<out>/report/``; returns its first page."""
    group = zarr.open_group(str(cmp.store_path), mode="r", zarr_format=3)
    title = f"{cmp.a.name} vs {cmp.b.name}: {counted(summary['images'], 'image')}"
    notes = notes_of(cmp)
    files: dict[str, bytes | str] = {f"assets/{STYLESHEET}": stylesheet()}
    sections = class_sections(cmp, group, summary, files)
    gallery = gallery_sections(cmp, group, files)
    files["index.html"] = overview_page(title, facts_of(cmp, summary), summary["differences"],
                                        summary["test"], cmp.settings.alpha, sections, notes)
    files["gallery.html"] = gallery_page(title, gallery, cmp.settings.gallery,
                                         cmp.settings.top_fraction, COLORMAP, notes)
    empty = ("Neither run has explanation strategies: their reports did not run (or no class "
             "had enough images to cluster).")
    files["strategies.html"] = strategies_page(title, summary["strategies"],
                                               cmp.settings.min_overlap, empty, notes)
    target = cmp.out / "report"
    build = build_folder(target)
    write_files(build, files)
    copy_assets(build)
    publish(build, target)
    return target / "index.html"
