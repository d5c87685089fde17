"""The picture files of the report's tiles: grey-level maps and mask outlines as PNG, crops as
JPEG, each a tile or a sprite of them (:mod:`pipeline.report.sprites`), and a cluster's mean
map for the strategies page.

The page colours a grey-level map with an SVG filter (:func:`pipeline.report.templating.
svg_filters`), so switching colormaps needs no new files.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.report.sprites import CROP, OUTLINE, map_kind, sprite_path

#: The mask outline's colour on the gallery's tiles (absent from the offered colormaps'
#: dark ends and from most photos).
OUTLINE_RGBA = (0, 229, 255, 255)


def grey_levels(values: np.ndarray) -> np.ndarray:
    """Display maps in [0, 1] (NaN: 0), any shape, as uint8 grey levels."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0)
    return (np.clip(v, 0.0, 1.0) * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)


def stacked(tiles: np.ndarray) -> np.ndarray:
    """Tiles ``(N, H, W, ...)`` as one image ``(N * H, W, ...)``, the first on top."""
    t = np.asarray(tiles)
    return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])


def map_png(values: np.ndarray) -> bytes:
    """A display map ``(H, W)`` in [0, 1] (NaN: 0) as a grey-level PNG."""
    return grey_png(grey_levels(values))


def grey_png(grey: np.ndarray) -> bytes:
    """Grey levels ``(H, W)`` uint8 (:func:`grey_levels`; a sprite of them,
    :func:`stacked`) as a PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(grey, dtype=np.uint8), mode="L").save(buf, format="PNG",
                                                                     compress_level=1)
    return buf.getvalue()


def crop_jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    """A crop ``(H, W, 3)`` uint8, or a sprite of them (:func:`stacked`), as JPEG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buf, format="JPEG",
                                                             quality=quality)
    return buf.getvalue()


def mask_outline(mask: np.ndarray, width: int | None = None) -> np.ndarray:
    """The outline of a ground-truth mask ``(H, W)`` bool: the mask's pixels with a
    neighbour outside it, thickened to ``width`` pixels (default: 1 per 112 of the side)."""
    m = np.asarray(mask, dtype=bool)
    width = width or max(1, round(m.shape[0] / 112))
    padded = np.pad(m, 1, constant_values=False)
    inner = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    edge = m & ~inner
    for _ in range(width - 1):
        p = np.pad(edge, 1, constant_values=False)
        edge = edge | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]
    return edge


def outline_rgba(mask: np.ndarray) -> np.ndarray:
    """A mask's outline (:func:`mask_outline`) as transparent RGBA ``(H, W, 4)`` uint8."""
    edge = mask_outline(mask)
    rgba = np.zeros((*edge.shape, 4), dtype=np.uint8)
    rgba[edge] = OUTLINE_RGBA
    return rgba


def outline_png(rgba: np.ndarray) -> bytes:
    """Outlines (:func:`outline_rgba`, or a sprite of them) as a PNG, to lay on tiles."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG")
    return buf.getvalue()


def sprite_files(shard: int, tiles: int, rows: Sequence[Mapping[str, Any]], crops: np.ndarray,
                 outlines: np.ndarray, greys: np.ndarray) -> dict[str, bytes]:
    """A shard's tiles as sprite files, by their paths (:func:`pipeline.report.sprites.
    sprite_path`), ``tiles`` a sprite. A sprite is made only where one of its tiles is shown
    (the gallery rows' ``c``, ``o`` and ``m`` flags); the others' places stay blank.

    Parameters
    ----------
    rows
        The shard's gallery rows, one per image, in order.
    crops
        The crops ``(N, H, W, 3)`` uint8.
    outlines
        The mask outlines ``(N, H, W, 4)`` uint8 (:func:`outline_rgba`).
    greys
        The grey-level maps ``(M, N, H, W)`` uint8 (:func:`grey_levels`), per method slot.
    """
    out: dict[str, bytes] = {}
    for part, start in enumerate(range(0, len(rows), tiles)):
        these = rows[start:start + tiles]
        sl = slice(start, start + len(these))
        if any(r["c"] for r in these):
            out[sprite_path(CROP, shard, part)] = crop_jpeg(stacked(crops[sl]))
        if any(r["o"] for r in these):
            out[sprite_path(OUTLINE, shard, part)] = outline_png(stacked(outlines[sl]))
        for j in range(greys.shape[0]):
            if any(r["m"][j] for r in these):
                out[sprite_path(map_kind(j), shard, part)] = grey_png(stacked(greys[j, sl]))
    return out


def mean_map_png(features: np.ndarray, size: int, colormap: str, scale: int = 4) -> bytes:
    """A cluster's mean downsampled map ``(size * size,)`` as a coloured PNG, enlarged."""
    from PIL import Image

    from pipeline.render.heatmaps import colormap_lut

    m = np.nan_to_num(np.asarray(features, dtype=np.float32).reshape(size, size))
    top = float(m.max())
    grey = np.round(np.clip(m / top if top > 0 else m, 0, 1) * 255).astype(np.uint8)
    rgb = np.take(colormap_lut(colormap), grey, axis=0)
    img = Image.fromarray(rgb).resize((size * scale, size * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
