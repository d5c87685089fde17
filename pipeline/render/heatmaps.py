"""Heat maps and contact sheets: colormap lookups on uint8 tiles, composed with Pillow.

A contact sheet has one row per explained image: its caption (the image id, the predicted
class and its probability, and the true label when known, in green (right) or red (wrong)),
then the image and one heat map per method. Each map is scaled and clipped on its own (at its
``clip_percentile``), so the colour bar reads as a fraction of each map's own clipped maximum.
Method headers, the colour bar, the random-weights banner and a footer listing skipped images
complete it. :func:`explain_figure` draws one image's row the same way (``xai explain``).

A figure library is only used for what needs one: matplotlib's colormaps (as 256-entry lookup
tables) and its DejaVu fonts; the run's matplotlib figures are in :mod:`pipeline.render.figures`.
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

from pipeline.file_io import write_atomic

RIGHT, WRONG, UNKNOWN = "#1a7f37", "#cf222e", "#24292f"
BACKGROUND = (255, 255, 255)
#: The thin rule between two rows of a sheet.
RULE = (208, 215, 222)


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


#: A method header wraps at its underscores onto at most this many lines; a name that needs
#: more (or a word wider than the tile) is numbered, and the legend above the sheet names it.
MAX_HEADER_LINES = 3


def wrap_text(draw: Any, text: str, font: Any, width: int, breaks: str = "_ ") -> list[str]:
    """``text`` in lines of at most ``width`` pixels, broken after any of ``breaks`` (a word
    wider than ``width`` is broken between characters). Nothing is dropped:
    ``"".join(lines) == text``; a line may end with the break character (drawn, or for a
    space, not visible)."""
    words: list[str] = []
    start = 0
    for i, ch in enumerate(text):
        if ch in breaks:
            words.append(text[start:i + 1])
            start = i + 1
    if start < len(text):
        words.append(text[start:])
    lines: list[str] = []
    current = ""
    for word in words:
        if _text_width(draw, (current + word).rstrip(), font) <= width:
            current += word
            continue
        if current:
            lines.append(current)
            current = ""
        while word and _text_width(draw, word.rstrip(), font) > width:
            cut = max(1, next((k for k in range(len(word), 0, -1)
                               if _text_width(draw, word[:k], font) <= width), 1))
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    if current or not lines:
        lines.append(current)
    return lines


def header_lines(draw: Any, name: str, font: Any, width: int) -> list[str] | None:
    """A method's header, wrapped at its underscores within ``width`` pixels, or None when it
    would need more than :data:`MAX_HEADER_LINES` lines or a word broken in two (then the
    sheet numbers the column and its legend names the method)."""
    lines = wrap_text(draw, name, font, width, breaks="_")
    whole = all(line.endswith("_") for line in lines[:-1])  # broken at underscores only
    return lines if len(lines) <= MAX_HEADER_LINES and whole else None


def colour_bar_label(style: SheetStyle) -> str:
    """What the sheet's colour means, in words: each map is scaled and clipped on its own."""
    top = (f"its {style.clip_percentile:g}th percentile" if style.clip_percentile < 100
           else "its maximum")
    if style.signed:
        text = ("colour = summed attribution as a fraction of each map's own clipped maximum "
                f"of |A| ({top}), zero at the centre")
    else:
        text = f"colour = fraction of each map's own clipped maximum ({top})"
    text += "; each map has its own scale, so colours are not comparable across maps"
    if style.overlay:
        text += "; blended on the image"
    return text


def _caption_lines(row: SheetRow) -> list[tuple[str, str]]:
    lines = [(row.image_id, UNKNOWN), (f"pred: {row.pred_name} ({row.prob:.2f})", UNKNOWN)]
    if row.true_name is not None:
        right = row.true_name == row.pred_name
        lines.append((f"true: {row.true_name} {'✓' if right else '✗'}",
                      RIGHT if right else WRONG))
    return lines


#: Caption lines each row reserves (id, prediction, true label).
CAPTION_LINES = 3


@dataclass(frozen=True)
class _Layout:
    """Where things go on a sheet (pixels)."""

    tile: int
    pad: int
    gap: int       # between columns
    row_gap: int   # between one row's tiles and the next row's caption
    cap_gap: int   # between a caption and its own tiles
    line: int
    caption_h: int

    @property
    def pitch(self) -> int:
        """From one row's caption to the next one's."""
        return self.caption_h + self.cap_gap + self.tile + self.row_gap


def _layout(tile: int, font_size: int) -> _Layout:
    gap = max(4, tile // 28)
    line = round(font_size * 1.3)
    return _Layout(tile=tile, pad=max(8, tile // 16), gap=gap, row_gap=max(3 * gap, line),
                   cap_gap=max(2, gap // 2), line=line, caption_h=CAPTION_LINES * line)


def contact_sheet(rows: Sequence[SheetRow], methods: Sequence[str], *,
                  style: SheetStyle | None = None, banner: str | None = None,
                  title: str | None = None) -> Any:
    """Compose a contact sheet as a ``PIL.Image`` (RGB).

    Each row is its caption (id, prediction, true label), just above its tiles, then a wider
    gap and a thin rule before the next row, so a caption reads with its own row. Method
    headers wrap at underscores; one that would not fit in :data:`MAX_HEADER_LINES` lines
    is numbered (``[2]``) and named in full in a legend under the title. The colour bar's
    label says what the colour means (:func:`colour_bar_label`).

    Parameters
    ----------
    rows
        Up to ``images_per_sheet`` rows; rows whose ``status`` is not ``ok`` are listed in the
        footer instead of taking a row.
    methods
        Column headers, one per map (``row.maps`` has one map per method).
    style
        How maps are shown (:class:`SheetStyle`; default: its defaults).
    banner
        A warning printed in red across the top (e.g. random weights).
    title
        A line under the banner (e.g. ``images 1-8``).

    Returns
    -------
    PIL.Image.Image
        The sheet. ``info["tiles"]``: each (shown row, column) tile's top-left corner
        (column 0 is the image); ``info["headers"]``: each method's header lines;
        ``info["legend"]``: the legend's lines (empty when every header fits);
        ``info["colour_bar"]``: the colour bar label's lines.
    """
    from PIL import Image, ImageDraw

    style = style or SheetStyle()
    shown = [r for r in rows if r.status == "ok"]
    skipped = [r for r in rows if r.status != "ok"]
    tile = max([r.pixels.shape[0] for r in rows] or [224])
    fs = style.font_size
    lay = _layout(tile, fs)
    pad, gap, line = lay.pad, lay.gap, lay.line
    small, bold = load_font(fs), load_font(round(fs * 1.15), bold=True)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    cols = len(methods) + 1
    width = 2 * pad + cols * tile + (cols - 1) * gap
    text_w = width - 2 * pad
    # The banner (bold, red) and the title wrap at spaces rather than being shortened.
    head = [(text, k == 0 and banner is not None)
            for k, t in enumerate(t for t in (banner, title) if t)
            for text in wrap_text(probe, t, bold if (k == 0 and banner) else small, text_w,
                                  breaks=" ")]
    headers: dict[str, list[str]] = {}
    legend_entries: list[str] = []
    for c, name in enumerate(methods):
        lines = header_lines(probe, name, bold, tile)
        if lines is None:
            lines = [f"[{c + 1}]"]
            legend_entries.append(f"[{c + 1}] {name}")
        headers[name] = lines
    legend = [ln for entry in legend_entries for ln in wrap_text(probe, entry, small, text_w)]
    header_rows = max([len(v) for v in headers.values()] or [1])
    top = (pad + len(head) * round(line * 1.2) + len(legend) * line + header_rows * line
           + lay.row_gap)
    label = wrap_text(probe, colour_bar_label(style), small, text_w, breaks=" ")
    bar_hh = max(round(tile * 0.09), 6)
    bar_h = bar_hh + 5 + line + len(label) * line + gap
    footer = len(skipped) + (1 if skipped else 0)
    body = max(1, len(shown)) * lay.pitch
    height = top + body + bar_h + footer * line + pad
    # Tiles and the colour bar go into one array; text is drawn on it afterwards.
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[...] = BACKGROUND
    boxes = _tile_boxes(len(shown), len(methods), top, lay)
    for r, row in enumerate(shown):
        x, y0 = boxes[(r, 0)]
        canvas[y0:y0 + tile, x:x + tile] = row.pixels[..., :3]
        for c in range(len(methods)):
            x, y0 = boxes[(r, c + 1)]
            canvas[y0:y0 + tile, x:x + tile] = heatmap_tile(row.maps[c], style, row.pixels)
        if r + 1 < len(shown):  # a thin rule between this row and the next one's caption
            rule = y0 + tile + lay.row_gap // 2
            canvas[rule, pad:width - pad] = RULE
    bar_y = top + body
    bar_x, bar_w = pad + tile + gap, width - 2 * pad - tile - gap
    lut = colormap_lut(style.signed_colormap if style.signed else style.colormap)
    canvas[bar_y:bar_y + bar_hh, bar_x:bar_x + bar_w] = \
        lut[np.linspace(0, 255, max(bar_w, 2)).round().astype(int)][None]
    sheet = Image.fromarray(canvas)
    draw = ImageDraw.Draw(sheet)
    y = pad
    for text, is_banner in head:
        font = bold if is_banner else small
        text = text.rstrip()
        draw.text(((width - _text_width(draw, text, font)) // 2, y), text,
                  fill=WRONG if is_banner else UNKNOWN, font=font)
        y += round(line * 1.2)
    for text in legend:
        draw.text((pad, y), text, fill=UNKNOWN, font=small)
        y += line
    for c, name in enumerate(methods):
        x = pad + (c + 1) * (tile + gap)
        for k, text in enumerate(headers[name]):
            draw.text((x + (tile - _text_width(draw, text, bold)) // 2, y + k * line), text,
                      fill=UNKNOWN, font=bold)
    if not shown:
        draw.text((pad, top + lay.caption_h + tile // 2), "no explained images on this sheet",
                  fill=UNKNOWN, font=small)
    for r, row in enumerate(shown):
        y = top + r * lay.pitch
        for k, (text, colour) in enumerate(_caption_lines(row)):
            draw.text((pad, y + k * line), _fit(draw, text, small, text_w), fill=colour,
                      font=small)
    _colour_bar_labels(draw, style, bar_x, bar_y, bar_w, bar_hh, small)
    y = bar_y + bar_hh + 5 + line
    for text in label:
        draw.text((pad, y), text.rstrip(), fill=UNKNOWN, font=small)
        y += line
    y = bar_y + bar_h
    if skipped:
        draw.text((pad, y), f"skipped ({len(skipped)}):", fill=UNKNOWN, font=bold)
        for k, row in enumerate(skipped):
            draw.text((pad, y + (k + 1) * line),
                      _fit(draw, f"{row.image_id}: {row.status}", small, text_w),
                      fill=UNKNOWN, font=small)
    # Where each (shown row, column) tile's top-left corner is: for tests and for callers
    # that crop the sheet. Column 0 is the image.
    sheet.info["tiles"] = boxes
    sheet.info["headers"] = headers
    sheet.info["legend"] = legend
    sheet.info["colour_bar"] = label
    return sheet


def _tile_boxes(rows: int, methods: int, top: int, lay: _Layout
                ) -> dict[tuple[int, int], tuple[int, int]]:
    """Top-left corner of each (row, column) tile; column 0 is the image."""
    return {(r, c): (lay.pad + c * (lay.tile + lay.gap),
                     top + r * lay.pitch + lay.caption_h + lay.cap_gap)
            for r in range(rows) for c in range(methods + 1)}


def _colour_bar_labels(draw: Any, style: SheetStyle, x: int, y: int, width: int,
                       height: int, font: Any) -> None:
    """The colour bar's ticks: fractions of each map's own clipped maximum."""
    ticks = ("−1", "0", "+1") if style.signed else ("0", "0.5", "1")
    for k, tick in enumerate(ticks):
        tx = x + round(k * (width - 1) / (len(ticks) - 1))
        draw.line([(tx, y + height), (tx, y + height + 4)], fill=UNKNOWN)
        w = _text_width(draw, tick, font)
        draw.text((min(max(tx - w // 2, x), x + width - w), y + height + 5), tick,
                  fill=UNKNOWN, font=font)


def explain_figure(pixels: np.ndarray, maps: np.ndarray | Sequence[np.ndarray],
                   methods: Sequence[str], *, image_id: str, pred_name: str, prob: float,
                   true_name: str | None = None, style: SheetStyle | None = None,
                   banner: str | None = None, title: str | None = None,
                   path: Path | str | None = None) -> Any:
    """One image's figure, drawn exactly as a contact sheet's row: the image, then one map
    per method, each clipped at its own ``style.clip_percentile`` (99 by default), with
    the headers, the caption and the colour bar of the sheets.

    Parameters
    ----------
    pixels
        The image that was explained: ``(H, W, 3)`` uint8, or ``(3, H, W)`` float in [0, 1]
        (an unnormalized tensor's ``.numpy()``).
    maps
        One map per method, in ``methods``' order: ``(M, H, W)`` channel-summed maps (what
        the store's ``aggregated`` holds, :func:`pipeline.explainers.aggregate_attribution`)
        or ``(M, 3, H, W)`` raw attributions (summed here). Unless ``style.signed``, each is
        normalized like the pipeline's normalize stage (``|A|`` scaled to [0, 1]) first.
    methods
        The method names (the column headers).
    image_id, pred_name, prob, true_name
        The caption: the image's name, the predicted class and its probability, the true
        class when known (then green when right, red when wrong).
    style
        :class:`SheetStyle` (the run's ``[render]`` settings; default: its defaults).
    banner, title
        As in :func:`contact_sheet` (e.g. the random-weights warning).
    path
        Where to also write the figure as PNG (atomically); None: only return it.

    Returns
    -------
    PIL.Image.Image
        The figure (RGB).

    Raises
    ------
    ValueError
        When the shapes do not fit together (what was expected and what was given).
    """
    from pipeline.attribution.postprocess import normalize_block

    style = style or SheetStyle()
    image = _as_uint8_hwc(pixels)
    stack = np.asarray(maps, dtype=np.float32)
    if stack.ndim == 4:
        stack = stack.sum(axis=1, dtype=np.float64).astype(np.float32)
    if stack.ndim != 3 or stack.shape[0] != len(methods):
        raise ValueError(f"Expected maps of shape ({len(methods)}, H, W) or "
                         f"({len(methods)}, 3, H, W), one per method, got "
                         f"{tuple(np.shape(maps))}: pass one map per name in methods.")
    if stack.shape[1:] != image.shape[:2]:
        raise ValueError(f"Expected maps of the image's size {image.shape[:2]}, got "
                         f"{stack.shape[1:]}: pass the crop that was explained.")
    if not style.signed:
        stack = normalize_block(stack[:, None])[:, 0]
    row = SheetRow(image_id, image, stack, "ok", pred_name, float(prob), true_name)
    figure = contact_sheet([row], methods, style=style, banner=banner, title=title)
    if path is not None:
        save_image_atomic(figure, Path(path))
    return figure


def _as_uint8_hwc(pixels: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 from itself or from ``(3, H, W)`` floats in [0, 1]."""
    a = np.asarray(pixels)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = np.moveaxis(a, 0, -1)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"Expected an image of shape (H, W, 3) or (3, H, W), got "
                         f"{tuple(np.shape(pixels))}.")
    if a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float32), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    return a


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
