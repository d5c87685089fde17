"""``render``: the contact sheets ``sheets/sheet-NNNN.png`` (image + one heat map per method per
row), and with ``[render] tiles = true`` one tile per image and method."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from workflows.config.run_config import Config
from workflows.runner import fault_injection as faults
from workflows.runner.disk_writes import disk_errors
from workflows.runner.stage_api import (
    Stage,
    Task,
    Unit,
    done,
    explained_status,
    open_view,
    register_stage,
    sheet_style,
)

#: Stamped on every sheet of a run with random weights.
RANDOM_BANNER = "RANDOM WEIGHTS: results are meaningless"
#: The contact sheet's layout version (2: captions with their own row, wrapped headers or a
#: legend, the colour bar's label per map).
SHEET_LAYOUT = 2


def sheet_path(run_dir: Path, index: int) -> Path:
    return Path(run_dir) / "sheets" / f"sheet-{index:04d}.png"


def tile_path(run_dir: Path, method: str, index: int) -> Path:
    """The heat-map tile of image ``index`` for ``method`` (``[render] tiles = true``)."""
    return Path(run_dir) / "tiles" / method / f"{index:06d}.png"


def class_name(classes: list[str], index: int) -> str:
    """The name of class ``index``; ``?`` for none (-1), the number where names are missing."""
    if index < 0:
        return "?"
    return classes[index] if index < len(classes) else str(index)


def sheet_degeneracy(group: Any, methods: list[str], rows: slice, ok: np.ndarray,
                     maps: np.ndarray) -> str | None:
    """The degenerate-output banner of one sheet, from its own images: their logits and
    gaps (read from the store, outside the stage's declared inputs so that its hash is
    unchanged) and their channel-summed maps ``maps`` (image, method, y, x)."""
    from pipeline.evaluation.degeneracy import banner_text, find_degeneracy
    from pipeline.store.access import explainers
    from pipeline.store.arrays import array

    if not ok.any():
        return None
    logits = np.asarray(array(group, "logits")[rows])[ok] if "logits" in group else \
        np.empty((0, 0))
    names = explainers(group)
    gaps = {}
    if "gap" in group:
        stored = np.asarray(array(group, "gap")[:, rows])
        gaps = {m: stored[names.index(m)][ok] for m in methods if m in names}
    peaks = {}
    for c, m in enumerate(methods):
        values = np.abs(np.asarray(maps[ok, c], dtype=np.float64))
        finite = values[np.isfinite(values)]
        peaks[m] = float(finite.max()) if finite.size else float("nan")
    return banner_text(find_degeneracy(logits, gaps, peaks, int(ok.sum())))


@register_stage
class Render(Stage):
    name = "render"
    reads = ("image", "status", "pixels", "pred", "prob", "label", "normalized", "aggregated")
    writes = ()  # files: sheets/ and tiles/
    unit = "sheet"
    output_dirs = ("sheets", "tiles")
    doc = "contact sheets sheets/sheet-NNNN.png: image + one heat map per method per row"

    def depends(self, cfg: Config, method: str | None, weights_id: str) -> Any:
        # SHEET_LAYOUT: sheets drawn by an older layout are drawn again.
        return [cfg.render.images_per_sheet, sheet_style(cfg).__dict__, cfg.render.tiles,
                cfg.run.target, {"layout": SHEET_LAYOUT}]

    def output_file(self, run_dir: Path, unit: Unit) -> Path:
        return sheet_path(run_dir, unit.index)

    def run(self, task: Task) -> dict[str, Any]:
        """One contact sheet (images ``[start, stop)``, every method), written atomically, and
        the per-(image, method) tiles when asked for."""
        from PIL import Image

        from pipeline.render.heatmaps import (
            SheetRow,
            contact_sheet,
            heatmap_tile,
            save_image_atomic,
        )

        sheet, cfg = task.unit, task.cfg
        style = sheet_style(cfg)
        methods = list(cfg.method_names)
        store = open_view(task, mode="r")
        attrs = store.group.attrs
        classes = list(attrs.get("classes") or [])
        sl = slice(sheet.start, sheet.stop)
        data = store.rows(sl, "image", "status", "pixels", "pred", "prob", "label")
        ids, status = data["image"].tolist(), data["status"].tolist()
        pixels, pred, prob, label = data["pixels"], data["pred"], data["prob"], data["label"]
        source = "aggregated" if style.signed else "normalized"
        maps = np.stack([store.read_maps(source, store.slot(m), sl) for m in methods], axis=1)
        signed = maps if style.signed else np.stack(
            [store.read_maps("aggregated", store.slot(m), sl) for m in methods], axis=1)
        banners = [RANDOM_BANNER if attrs.get("random_weights") else None,
                   sheet_degeneracy(store.group, methods, sl,
                                    np.asarray(status) == "ok", signed)]
        banner = " ".join(b for b in banners if b) or None
        rows = []
        for k in range(sheet.size):
            p, t = int(pred[k]), int(label[k])
            rows.append(SheetRow(
                image_id=str(ids[k]), pixels=pixels[k], maps=maps[k],
                status=explained_status(str(status[k]), t, cfg.run.target),
                pred_name=class_name(classes, p), prob=float(prob[k]),
                true_name=class_name(classes, t) if t >= 0 else None))
        title = f"images {sheet.start + 1}-{sheet.stop}"
        image = contact_sheet(rows, methods, style=style, banner=banner, title=title)
        path = sheet_path(Path(task.run_dir), sheet.index)
        faults.point("render:before-write")
        with disk_errors(path):
            if cfg.render.tiles:
                for k, row in enumerate(rows):
                    for c, m in enumerate(methods):
                        if row.status == "ok":
                            tile = Image.fromarray(heatmap_tile(row.maps[c], style,
                                                                row.pixels))
                            save_image_atomic(tile, tile_path(Path(task.run_dir), m,
                                                              sheet.start + k))
            save_image_atomic(image, path,
                              before_rename=lambda: faults.point("render:mid-write"))
        return done(task, store, file=path.name)

    def remove_stale(self, run_dir: Path, valid: set[int]) -> int:
        """Delete sheet files without a current record (e.g. after images_per_sheet
        changed), and temporaries a kill left."""
        removed = 0
        folder = Path(run_dir) / "sheets"
        if not folder.is_dir():
            return 0
        for path in folder.glob("sheet-*.png"):
            try:
                index = int(path.stem.split("-", 1)[1])
            except ValueError:
                continue
            if index not in valid:
                path.unlink(missing_ok=True)
                removed += 1
        for tmp in folder.glob(".sheet-*.tmp"):
            tmp.unlink(missing_ok=True)
        return removed
