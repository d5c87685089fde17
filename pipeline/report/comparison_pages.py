"""The comparison's report pages (``xai compare``): an overview (the runs, what differs, the
classes ranked by change with their mean maps), a gallery of the most changed images and the
matched strategies. Same frame, stylesheet, policy and escaping as the run report (the
templates ``compare_*.html`` extend ``frame.html``); the images are small PNG and JPEG files
of their own folder.

Arrays: maps ``(H, W)`` float; photos ``(H, W, 3)`` uint8.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.report.templating import RESOURCES, render

#: The comparison's pages, in the order the navigation lists them.
NAV = (("index.html", "Classes"), ("gallery.html", "Gallery"),
       ("strategies.html", "Strategies"))
#: Its own stylesheet (after the run report's), copied into ``assets/``.
STYLESHEET = "compare.css"
#: The colormap of differences: blue (A more) through white to red (B more).
DIFF_COLORMAP = "RdBu_r"


def colour_png(values: np.ndarray, colormap: str, lo: float, hi: float) -> bytes:
    """A map ``(H, W)`` as an RGB PNG through ``colormap``, ``lo`` to ``hi`` (NaN: ``lo``)."""
    from PIL import Image

    from pipeline.render.heatmaps import colormap_lut

    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=lo)
    idx = np.clip((v - lo) / max(hi - lo, 1e-12) * 255 + 0.5, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(colormap_lut(colormap)[idx]).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def map_tiles(path: str, a: np.ndarray, b: np.ndarray, colormap: str,
              diff_scale: float | None = None) -> dict[str, bytes]:
    """A's map, B's map and their difference as ``<path>-a.png``, ``-b.png``, ``-d.png``;
    the difference on a symmetric scale (``diff_scale``, else its own largest value)."""
    d = np.asarray(b, np.float64) - np.asarray(a, np.float64)
    scale = diff_scale or float(np.nanmax(np.abs(d), initial=0.0)) or 1.0
    return {f"{path}-a.png": colour_png(a, colormap, 0.0, 1.0),
            f"{path}-b.png": colour_png(b, colormap, 0.0, 1.0),
            f"{path}-d.png": colour_png(d, DIFF_COLORMAP, -scale, scale)}


def fmt(value: Any, digits: int = 3) -> str:
    """A figure for a table: rounded, ``–`` where there is none."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if not np.isfinite(value) else f"{value:.{digits}g}"
    return str(value)


@dataclass
class ClassSection:
    """One table of the overview: the classes of one method and grouping."""

    title: str
    rows: list[dict[str, Any]]
    flagged: int = 0


@dataclass
class GalleryItem:
    """One image of the gallery: its id, figures and tiles (``(src, alt)``)."""

    id: str
    change: str
    iou: str
    pred_a: str
    pred_b: str
    changed: bool
    tiles: list[tuple[str, str]] = field(default_factory=list)


def overview_page(title: str, facts: Sequence[tuple[str, Any]],
                  differences: Sequence[Mapping[str, str]], test: str, alpha: float,
                  sections: Sequence[ClassSection], notes: Sequence[str] = ()) -> str:
    """``index.html``: the runs, what differs, and the class tables."""
    return render("compare_overview.html", title=title, nav=NAV, current="index.html",
                  facts=facts, differences=[(d["key"], d["a"], d["b"]) for d in differences],
                  test=test, alpha=alpha, sections=sections, notes=notes)


def gallery_page(title: str, sections: Sequence[Mapping[str, Any]], shown: int,
                 top_fraction: float, colormap: str, notes: Sequence[str] = ()) -> str:
    """``gallery.html``: per method (``name``, ``entries``: :class:`GalleryItem`)."""
    return render("compare_gallery.html", title=title, nav=NAV, current="gallery.html",
                  sections=sections, shown=shown, top_percent=fmt(100 * top_fraction),
                  colormap=colormap, notes=notes)


def strategies_page(title: str, strategies: Sequence[Mapping[str, Any]], min_overlap: float,
                    empty: str, notes: Sequence[str] = ()) -> str:
    """``strategies.html``: the matched strategies, one row each."""
    rows = [(s["explainer"], s["class"], s["kind"], _cluster(s["cluster_a"]),
             _cluster(s["cluster_b"]), s["images_a"], s["images_b"], fmt(s["share_a"]),
             fmt(s["share_b"]), fmt(s["share_b"] - s["share_a"]), fmt(s["overlap"]))
            for s in strategies]
    return render("compare_strategies.html", title=title, nav=NAV,
                  current="strategies.html", rows=rows, min_overlap=min_overlap,
                  empty=empty, notes=notes)


def _cluster(number: int) -> str:
    return "–" if number < 0 else str(number)


def stylesheet() -> bytes:
    """The comparison pages' own stylesheet."""
    return (RESOURCES / STYLESHEET).read_bytes()
