"""Heat maps and contact sheets: colormap lookups on uint8 tiles, composed with Pillow.

A contact sheet has one row per explained image: the image, then one heat map per method on
one shared colour scale, with the image id, the predicted class and its probability, and the
true label when known, in green (right) or red (wrong). Method headers, one colour bar, the
random-weights banner and a footer listing skipped images complete it.

A figure library is only used for what needs one: matplotlib's colormaps (as 256-entry lookup
tables) and its DejaVu fonts. ``save_figure_atomic`` remains for the seed's matplotlib figure.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.files import write_atomic

RIGHT, WRONG, UNKNOWN = "#1a7f37", "#cf222e", "#24292f"
BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class SheetRow:
    """One image's row: crop ``(Y, X, 3)`` uint8, maps ``(M, Y, X)`` (NaN where missing)."""

    image_id: str
    pixels: np.ndarray
    maps: np.ndarray
    status: str
    pred_name: str
    prob: float
    true_name: str | None


@dataclass(frozen=True)
class SheetStyle:
    """How maps are shown. The stored arrays are never changed by any of this.

    Attributes
    ----------
    colormap
        matplotlib colormap for unsigned maps (``normalized``, in [0, 1]).
    signed_colormap
        Diverging colormap for signed maps (``aggregated``): zero is its centre.
    clip_percentile
        Display clipping per map: values at or above this percentile of the map (of ``|A|``
        for signed maps) take the top colour. 100 shows the map as stored.
    signed
        Show signed maps with zero at the centre of ``signed_colormap``.
    overlay
        Blend each map on the photo (more relevance, more colour) instead of a bare map.
    overlay_alpha
        The blend's strength at the top of the scale.
    font_size
        Caption size in pixels; headers are 1.15 times larger.
    """

    colormap: str = "inferno"
    signed_colormap: str = "RdBu_r"
    clip_percentile: float = 99.0
    signed: bool = False
    overlay: bool = False
    overlay_alpha: float = 0.7
    font_size: int = 14


@cache
def colormap_lut(name: str) -> np.ndarray:
    """matplotlib colormap ``name`` as a ``(256, 3)`` uint8 lookup table."""
    import matplotlib

    cmap = matplotlib.colormaps[name]
    return np.round(cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


def display_values(amap: np.ndarray, style: SheetStyle) -> np.ndarray:
    """A map scaled for display to [0, 1] (NaN stays NaN).

    Unsigned: divided by its ``clip_percentile`` value and clipped to [0, 1]. Signed: divided
    by that percentile of ``|A|``, clipped to [-1, 1] and shifted so that zero is 0.5.
    """
    values = np.asarray(amap, dtype=np.float32)
    flat = values.ravel()
    finite = np.isfinite(flat)
    data = flat if finite.all() else flat[finite]
    if data.size == 0:
        return np.full(values.shape, np.nan, dtype=np.float32)
    if style.signed:
        scale = float(np.percentile(np.abs(data), style.clip_percentile))
        if scale <= 0:
            return np.where(np.isnan(values), np.float32(np.nan), np.float32(0.5))
        return np.clip(values / scale, -1.0, 1.0) * 0.5 + 0.5
    top = float(np.percentile(data, style.clip_percentile)) if style.clip_percentile < 100 \
        else float(data.max())
    if top <= 0:
        return np.where(np.isnan(values), np.float32(np.nan), np.float32(0.0))
    return np.clip(values * np.float32(1.0 / top), 0.0, 1.0)


def heatmap_tile(amap: np.ndarray, style: SheetStyle, pixels: np.ndarray | None = None
                 ) -> np.ndarray:
    """One map as an RGB tile ``(Y, X, 3)`` uint8: a lookup-table colormap, optionally blended
    on ``pixels`` (the photo, same size). Missing values are drawn light grey."""
    values = display_values(amap, style)
    missing = np.isnan(values)
    any_missing = bool(missing.any())
    scaled = values * np.float32(255.0) + np.float32(0.5)  # round(v * 255) by truncation
    if any_missing:
        scaled[missing] = 0.0
    lut = colormap_lut(style.signed_colormap if style.signed else style.colormap)
    rgb = np.take(lut, scaled.astype(np.uint8), axis=0)  # 4x faster than lut[index]
    if style.overlay and pixels is not None:
        weight = style.overlay_alpha * (np.abs(values - 0.5) * 2 if style.signed else values)
        weight = np.nan_to_num(weight, nan=0.0)[..., None]
        rgb = (pixels.astype(np.float32) * (1 - weight) + rgb * weight).round().astype(np.uint8)
    if any_missing:
        rgb[missing] = 230
    return rgb


@cache
def _font(size: int, bold: bool) -> Any:
    import matplotlib
    from PIL import ImageFont

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    try:
        return ImageFont.truetype(str(path), size)
    except OSError as exc:
        warnings.warn(f"Cannot load the font {path} ({exc}); using Pillow's default font.",
                      stacklevel=2)
        try:
            return ImageFont.load_default(size)
        except OSError:  # no FreeType either: Pillow's bitmap font, fixed size
            return ImageFont.load_default_imagefont()


def load_font(size: int, bold: bool = False) -> Any:
    """DejaVu Sans (shipped with matplotlib) at ``size`` px; Pillow's default if it fails."""
    return _font(int(size), bool(bold))


def _text_width(draw: Any, text: str, font: Any) -> int:
    left, _top, right, _bottom = draw.textbbox((0, 0), text, font=font)
    return int(right - left)


def _fit(draw: Any, text: str, font: Any, width: int) -> str:
    """``text`` shortened with an ellipsis in the middle so that it fits ``width`` pixels."""
    if _text_width(draw, text, font) <= width:
        return text
    keep = len(text)
    while keep > 4:
        keep -= 1
        short = text[:keep // 2] + "…" + text[len(text) - (keep - keep // 2):]
        if _text_width(draw, short, font) <= width:
            return short
    return text[:4] + "…"


def _header_lines(draw: Any, name: str, font: Any, width: int) -> list[str]:
    """A method name on one line, or split at the underscore nearest its middle into two."""
    if _text_width(draw, name, font) <= width or "_" not in name:
        return [_fit(draw, name, font, width)]
    cuts = [i for i, ch in enumerate(name) if ch == "_"]
    cut = min(cuts, key=lambda i: abs(i - len(name) / 2))
    return [_fit(draw, name[:cut + 1], font, width), _fit(draw, name[cut + 1:], font, width)]


def _caption_lines(row: SheetRow) -> list[tuple[str, str]]:
    lines = [(row.image_id, UNKNOWN), (f"pred: {row.pred_name} ({row.prob:.2f})", UNKNOWN)]
    if row.true_name is not None:
        right = row.true_name == row.pred_name
        lines.append((f"true: {row.true_name} {'✓' if right else '✗'}",
                      RIGHT if right else WRONG))
    return lines


def contact_sheet(rows: Sequence[SheetRow], methods: Sequence[str], *,
                  style: SheetStyle | None = None, banner: str | None = None,
                  title: str | None = None) -> Any:
    """Compose a contact sheet as a ``PIL.Image`` (RGB).

    Parameters
    ----------
    rows
        Up to ``images_per_sheet`` rows; rows whose ``status`` is not ``ok`` are listed in the
        footer instead of taking a row.
    methods
        Column headers, one per map (``row.maps`` has one map per method).
    banner
        A warning printed in red across the top (e.g. random weights).
    """
    from PIL import Image, ImageDraw

    style = style or SheetStyle()
    shown = [r for r in rows if r.status == "ok"]
    skipped = [r for r in rows if r.status != "ok"]
    tile = max([r.pixels.shape[0] for r in rows] or [224])
    gap, pad = max(4, tile // 28), max(8, tile // 16)
    fs = style.font_size
    small, bold = load_font(fs), load_font(round(fs * 1.15), bold=True)
    line = round(fs * 1.3)
    draw_probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    caption_h = 3 * line + gap
    cols = len(methods) + 1
    width = 2 * pad + cols * tile + (cols - 1) * gap
    head = [t for t in (banner, title) if t]
    header_rows = max([len(_header_lines(draw_probe, m, bold, tile)) for m in methods] or [1])
    top = pad + len(head) * round(line * 1.2) + header_rows * line + gap
    bar_h = round(tile * 0.09) + 2 * line + gap
    footer = len(skipped) + (1 if skipped else 0)
    height = top + max(1, len(shown)) * (caption_h + tile + gap) + bar_h + footer * line + pad
    # Tiles and the colour bar go into one array; text is drawn on it afterwards.
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[...] = BACKGROUND
    boxes = _tile_boxes(len(shown), len(methods), top, pad, gap, tile, caption_h)
    for r, row in enumerate(shown):
        x, y0 = boxes[(r, 0)]
        canvas[y0:y0 + tile, x:x + tile] = row.pixels[..., :3]
        for c in range(len(methods)):
            x, y0 = boxes[(r, c + 1)]
            canvas[y0:y0 + tile, x:x + tile] = heatmap_tile(row.maps[c], style, row.pixels)
    bar_y = top + max(1, len(shown)) * (caption_h + tile + gap)
    bar_x, bar_w, bar_hh = pad + tile + gap, width - 2 * pad - tile - gap, round(tile * 0.09)
    lut = colormap_lut(style.signed_colormap if style.signed else style.colormap)
    canvas[bar_y:bar_y + max(bar_hh, 1), bar_x:bar_x + bar_w] = \
        lut[np.linspace(0, 255, max(bar_w, 2)).round().astype(int)][None]
    sheet = Image.fromarray(canvas)
    draw = ImageDraw.Draw(sheet)
    y = pad
    for k, text in enumerate(head):
        colour = WRONG if banner and k == 0 else UNKNOWN
        font = bold if banner and k == 0 else small
        text = _fit(draw, text, font, width - 2 * pad)
        draw.text(((width - _text_width(draw, text, font)) // 2, y), text, fill=colour,
                  font=font)
        y += round(line * 1.2)
    for c, name in enumerate(methods):
        x = pad + (c + 1) * (tile + gap)
        for k, label in enumerate(_header_lines(draw, name, bold, tile)):
            draw.text((x + (tile - _text_width(draw, label, bold)) // 2, y + k * line), label,
                      fill=UNKNOWN, font=bold)
    y = top
    if not shown:
        draw.text((pad, y + tile // 2), "no explained images on this sheet", fill=UNKNOWN,
                  font=small)
    for row in shown:
        for k, (text, colour) in enumerate(_caption_lines(row)):
            draw.text((pad, y + k * line), _fit(draw, text, small, width - 2 * pad),
                      fill=colour, font=small)
        y += caption_h + tile + gap
    y = max(y, top + caption_h + tile + gap)
    _colour_bar_labels(draw, style, bar_x, y, bar_w, bar_hh, small, line)
    y += bar_h
    if skipped:
        draw.text((pad, y), f"skipped ({len(skipped)}):", fill=UNKNOWN, font=bold)
        for k, row in enumerate(skipped):
            draw.text((pad, y + (k + 1) * line),
                      _fit(draw, f"{row.image_id}: {row.status}", small, width - 2 * pad),
                      fill=UNKNOWN, font=small)
    # Where each (shown row, column) tile's top-left corner is: for tests and for callers
    # that crop the sheet. Column 0 is the image.
    sheet.info["tiles"] = boxes
    return sheet


def _tile_boxes(rows: int, methods: int, top: int, pad: int, gap: int, tile: int,
                caption_h: int) -> dict[tuple[int, int], tuple[int, int]]:
    """Top-left corner of each (row, column) tile; column 0 is the image."""
    return {(r, c): (pad + c * (tile + gap), top + r * (caption_h + tile + gap) + caption_h)
            for r in range(rows) for c in range(methods + 1)}


def _colour_bar_labels(draw: Any, style: SheetStyle, x: int, y: int, width: int,
                       height: int, font: Any, line: int) -> None:
    ticks = ("−max", "0", "+max") if style.signed else ("0", "0.5", f"≥ p{style.clip_percentile:g}"
                                                          if style.clip_percentile < 100
                                                          else "1")
    for k, tick in enumerate(ticks):
        tx = x + round(k * (width - 1) / (len(ticks) - 1))
        draw.line([(tx, y + height), (tx, y + height + 4)], fill=UNKNOWN)
        w = _text_width(draw, tick, font)
        draw.text((min(max(tx - w // 2, x), x + width - w), y + height + 5), tick,
                  fill=UNKNOWN, font=font)
    if style.signed:
        label = "summed attribution per map, zero at the centre"
    else:
        label = "normalized attribution (one scale for every map)"
    if style.clip_percentile < 100:
        label += f", clipped at each map's {style.clip_percentile:g}th percentile for display"
    if style.overlay:
        label += "; blended on the image"
    draw.text((x, y + height + 5 + line), label, fill=UNKNOWN, font=font)


def encode_png(rgb: np.ndarray, level: int = 2) -> bytes:
    """An RGB ``(H, W, 3)`` uint8 array as PNG bytes: no row filter, zlib ``level``.

    Pillow always runs PNG's adaptive row filter, which took half of a sheet's encoding time
    and gains little on heat maps; this writes the same standard PNG without it.
    """
    h, w, _ = rgb.shape
    rows = np.empty((h, 1 + 3 * w), dtype=np.uint8)
    rows[:, 0] = 0  # filter type None on every row
    rows[:, 1:] = rgb.reshape(h, 3 * w)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), level)) + chunk(b"IEND", b""))


def save_image_atomic(image: Any, path: Path, before_rename: Callable[[], None] | None = None,
                      **save_args: Any) -> None:
    """Encode ``image`` (a ``PIL.Image``) by ``path``'s suffix into a temporary file in the
    same folder, then rename it into place. ``before_rename`` runs between the two.

    An RGB PNG without ``save_args`` goes through :func:`encode_png`.
    """
    fmt = {".png": "PNG", ".webp": "WEBP", ".jpg": "JPEG"}.get(path.suffix.lower(), "PNG")
    if fmt == "PNG" and image.mode == "RGB" and not save_args:
        data = encode_png(np.asarray(image))
    else:
        buf = io.BytesIO()
        image.save(buf, format=fmt, **save_args)
        data = buf.getvalue()
    write_atomic(path, data, before_rename)


def save_figure_atomic(fig: Any, path: Path, dpi: int = 100,
                       before_rename: Callable[[], None] | None = None) -> None:
    """Write a matplotlib figure as PNG via a temporary file and a rename (the seed's figure).

    ``before_rename`` runs between the two (crash tests use it to die mid-write).
    """
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # File names in any script are captions; a missing glyph is drawn as a box.
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
        fig.savefig(buf, format="png", dpi=dpi)
    write_atomic(path, buf.getvalue(), before_rename)
