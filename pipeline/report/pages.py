"""The static HTML report's pages: encodings, the gallery, summary and strategies pages, and the
atomic publication of the report's folder (library code: plain data in, HTML out).

The report is a folder that opens from the disk (``file://``) with no server and no network:

``index.html``
    the gallery (``assets/gallery.js``): one card per image, sorted and filtered in the page.
``summary.html``, ``strategies.html``
    run facts and plots; the explanation strategies (:mod:`pipeline.evaluation.spray`). Made here,
    with
    every string escaped.
``data/manifest.js``, ``data/shard-NNNNNN.js``, ``data/strategies.js``
    the data, as JSON wrapped in a script (browsers refuse ``fetch`` of ``file://`` URLs, but
    load scripts from the page's folder). Strings are JSON-escaped with ``<``, ``>`` and
    ``&`` as ``\\u003c``-style escapes, so no string can close a tag.
``img/c/<shard>-<part>.jpg``, ``img/m<method>/<shard>-<part>.png``, ``img/o/...``
    crops, grey-level maps and mask outlines, as sprites: a shard's tiles stacked in one
    file (:func:`sprite_path`; a part per :data:`SPRITE_PX` pixels), so the report's files
    grow with the shards, not the images. A page shows a tile as its sprite in a tile-sized
    ``<img>`` with ``object-fit: cover`` and the tile's ``object-position``. It colours maps
    with SVG filters (a colormap is a per-channel lookup table, :func:`svg_filters`), so
    switching colormaps needs no new files. Paths hold numbers only, never an image's name.

Everything is a relative path, so the folder can be moved or zipped.
"""

from __future__ import annotations

import contextlib
import ctypes
import html
import io
import json
import math
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluation.spray import Cluster

#: The static files of the page (copied into ``assets/``).
RESOURCES = Path(__file__).parent.parent / "resources" / "report"
#: Colormaps the page offers (the run's ``[render] colormap`` is added when missing).
COLORMAPS: tuple[str, ...] = ("inferno", "viridis", "magma", "turbo", "gray")
#: Entries per channel in an SVG colormap table (linearly interpolated by the browser).
TABLE_SIZE = 64


#: A sprite, one image file of a shard's tiles stacked top to bottom, is at most this many
#: pixels tall (JPEG's limit is 65,535; browsers decode what they show, so keep it small).
SPRITE_PX = 8192
#: The tile kinds: ``c`` crops (JPEG), ``o`` mask outlines (RGBA PNG), ``m<j>`` the grey-level
#: maps of the method in slot ``j`` (PNG).
CROP, OUTLINE = "c", "o"


#: The placing classes of the static pages' tiles (:meth:`Sprites.css`).
SPRITES_CSS = "data/sprites.css"


def map_kind(method_slot: int) -> str:
    """The tile kind of the maps of the method in slot ``method_slot``."""
    return f"m{method_slot}"


def sprite_tiles(tile_px: int, shard_size: int) -> int:
    """Tiles per sprite for tiles ``tile_px`` pixels tall in shards of ``shard_size``."""
    return max(1, min(shard_size, SPRITE_PX // max(1, tile_px)))


def sprite_path(kind: str, shard: int, part: int) -> str:
    """Sprite ``part`` of shard ``shard``'s tiles of ``kind``, relative to the report folder:
    ``img/<kind>/<shard>-<part>.jpg`` (crops) or ``.png``. Numbers only, never a name."""
    ext = "jpg" if kind == CROP else "png"
    return f"img/{kind}/{shard:06d}-{part}.{ext}"


@dataclass(frozen=True)
class TilePlace:
    """Where image ``index``'s tile lies: in sprite ``part`` of ``shard``, ``pos`` tiles
    from its top, of ``count`` tiles."""

    shard: int
    part: int
    pos: int
    count: int


def tile_place(index: int, shard_size: int, images: int, tiles: int) -> TilePlace:
    """The sprite place of image ``index`` of ``images``, ``tiles`` a sprite."""
    shard, k = divmod(index, shard_size)
    part, pos = divmod(k, tiles)
    in_shard = min(shard_size, images - shard * shard_size)
    return TilePlace(shard, part, pos, min(tiles, in_shard - part * tiles))


def grey_levels(values: np.ndarray) -> np.ndarray:
    """Display maps in [0, 1] (NaN: 0), any shape, as uint8 grey levels."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0)
    return (np.clip(v, 0.0, 1.0) * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)


def stacked(tiles: np.ndarray) -> np.ndarray:
    """Tiles ``(N, H, W, ...)`` as one image ``(N * H, W, ...)``, the first on top."""
    t = np.asarray(tiles)
    return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])


@dataclass(frozen=True)
class Sprites:
    """The report's sprite grid: ``images`` in shards of ``shard_size``, tiles ``px``
    pixels square, :func:`sprite_tiles` of them a sprite."""

    shard_size: int
    images: int
    px: int

    @property
    def tiles(self) -> int:
        return sprite_tiles(self.px, self.shard_size)

    def img(self, kind: str, index: int, alt: str) -> str:
        """Image ``index``'s tile of ``kind`` for static HTML: its sprite, lazily loaded, in
        a tile-sized ``<img>`` that ``object-fit: cover`` scales to the tile's width, placed
        by a class of :meth:`css` (the pages' policy allows no inline styles)."""
        at = tile_place(index, self.shard_size, self.images, self.tiles)
        return (f'<img loading=lazy class="sp t{at.count}-{at.pos}" '
                f'src="{sprite_path(kind, at.shard, at.part)}" alt="{esc(alt)}" '
                f'title="{esc(alt)}">')

    def css(self) -> str:
        """The placing classes :meth:`img` uses: ``t<count>-<pos>`` for every sprite size
        of the grid (a full shard's parts and the last shard's)."""
        shards = -(-self.images // self.shard_size)
        last = self.images - (shards - 1) * self.shard_size if shards else 0
        counts = sorted({min(self.tiles, size - p * self.tiles)
                         for size in {self.shard_size, last} if size > 0
                         for p in range(-(-size // self.tiles))})
        return "".join(f"img.sp.t{n}-{k}{{object-position:0 {sprite_position(k, n)}}}\n"
                       for n in counts for k in range(n))


def sprite_position(pos: int, count: int) -> str:
    """The CSS ``object-position`` height of tile ``pos`` of a sprite of ``count`` tiles,
    shown with ``object-fit: cover`` in a tile-sized box."""
    return f"{100 * pos / (count - 1):.6g}%" if count > 1 else "0%"


def shard_data_path(shard: int) -> str:
    return f"data/shard-{shard:06d}.js"


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


def script_json(obj: Any) -> str:
    """JSON safe to embed in a script: ASCII only, no NaN, and ``<``, ``>``, ``&`` escaped."""
    text = json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def data_script(variable: str, obj: Any, append: bool = False) -> bytes:
    """A script that sets ``window.<variable>`` to ``obj`` (or appends it to a list)."""
    if not variable.isidentifier():
        raise ValueError(f"Expected a JavaScript identifier, got {variable!r}.")
    if append:
        return (f"(window.{variable} = window.{variable} || []).push("
                f"{script_json(obj)});\n").encode()
    return f"window.{variable} = {script_json(obj)};\n".encode()


def finite(value: Any, digits: int = 5) -> float | None:
    """A float rounded to ``digits`` significant digits, or None (JSON null) when not finite."""
    v = float(value)
    if not math.isfinite(v):
        return None
    return float(f"{v:.{digits}g}")


def svg_filters(names: Iterable[str], default: str | None = None) -> str:
    """An invisible ``<svg>`` with one filter per colormap, ``id="cmap-<name>"``: a grey-level
    image through it comes out in that colormap (``feComponentTransfer`` tables).
    ``default``: also that colormap as ``id="cmap-default"`` (for pages without script)."""
    from pipeline.render.heatmaps import colormap_lut

    parts = ['<svg class="filters" aria-hidden="true" width="0" height="0">']
    entries = [(n, n) for n in names] + ([("default", default)] if default else [])
    for ident, name in entries:
        lut = colormap_lut(name).astype(np.float64) / 255.0
        idx = np.linspace(0, 255, TABLE_SIZE).round().astype(int)
        funcs = "".join(
            f'<feFunc{c} type="table" tableValues="'
            + " ".join(f"{v:.3f}" for v in lut[idx, k]) + '"/>'
            for k, c in enumerate("RGB"))
        parts.append(f'<filter id="cmap-{html.escape(ident, quote=True)}" '
                     f'color-interpolation-filters="sRGB"><feComponentTransfer>{funcs}'
                     "</feComponentTransfer></filter>")
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- pages

PAGES: tuple[tuple[str, str], ...] = (("index.html", "Gallery"), ("summary.html", "Summary"),
                                      ("strategies.html", "Strategies"))


def esc(value: Any) -> str:
    """Any value as HTML-escaped text (quotes too)."""
    return html.escape(str(value), quote=True)


def page(title: str, current: str, body: str, head: str = "") -> str:
    """A complete page in the report's frame: navigation, stylesheet, ``body`` (HTML)."""
    nav = " ".join(
        f'<a href="{href}"{" class=current" if href == current else ""}>{esc(label)}</a>'
        for href, label in PAGES)
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"{CSP}<title>{esc(title)}</title>"
        f'<link rel=stylesheet href="assets/report.css">{head}</head>'
        f"<body><header><nav>{nav}</nav><h1>{esc(title)}</h1></header>"
        f"<main>{body}</main></body></html>\n")


#: The page may load only its own folder's files; no inline script, no connections.
CSP = ('<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
       "script-src 'self' file:; style-src 'self' file:; img-src 'self' file:; "
       "connect-src 'none'; form-action 'none'; base-uri 'none'\">")
# (``file:`` too: browsers differ on whether 'self' covers a page's siblings on file://.)


def table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None,
          raw: bool = False) -> str:
    """An HTML table of escaped cells (``raw``: cells are HTML already)."""
    cell = (lambda v: str(v)) if raw else esc
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>")
    out.append("</table>")
    return "".join(out)


def gallery_html(title: str, colormaps: Sequence[str]) -> str:
    """``index.html``: the frame the gallery script fills (no data in it)."""
    body = (
        f"{svg_filters(colormaps)}"
        '<section id=banner hidden></section>'
        '<section id=controls></section>'
        '<p id=count>Loading the report data…</p>'
        '<section id=cards></section>'
        '<p id=more-wrap><button id=more type=button hidden>Show more</button></p>'
        '<noscript>The gallery needs JavaScript; summary.html and strategies.html do not.'
        "</noscript>")
    head = ('<script src="data/manifest.js" defer></script>'
            '<script src="assets/gallery.js" defer></script>')
    return page(title, "index.html", body, head)


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


# --------------------------------------------------------------------------- the folder


def link_tree(src: Path, dst: Path) -> int:
    """Hard-link every file under ``src`` into ``dst`` (a copy where links fail, e.g. across
    file systems); return the number of files."""
    count = 0
    for root, _dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            if name.startswith("."):  # temporary files of an interrupted write
                continue
            s, d = Path(root) / name, dst / rel / name
            try:
                os.link(s, d)
            except OSError:
                shutil.copy2(s, d)
            count += 1
    return count


def link_tree_file(src: Path, dst: Path) -> None:
    """Hard-link one file (a copy where links fail)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_files(folder: Path, files: Mapping[str, bytes | str]) -> None:
    """Write ``files`` (relative path -> content) under ``folder`` (a private build folder:
    the folder as a whole is published atomically, so single files need no temp names)."""
    for rel, content in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)


def copy_assets(folder: Path) -> None:
    """The page's static script and stylesheet into ``folder/assets``."""
    (folder / "assets").mkdir(parents=True, exist_ok=True)
    for name in ("gallery.js", "report.css"):
        shutil.copyfile(RESOURCES / name, folder / "assets" / name)


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    ok = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0
    return bool(ok)


def old_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def recover(target: Path) -> None:
    """Undo what a publication killed half-way left: put the old folder back where the new
    one never arrived, and remove left-over build and old folders."""
    old = old_path(target)
    if old.exists() and not target.exists():
        os.rename(old, target)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
    for build in target.parent.glob(f".{target.name}.build-*"):
        shutil.rmtree(build, ignore_errors=True)


def build_folder(target: Path) -> Path:
    """A fresh private folder next to ``target`` to build the new report in."""
    recover(target)
    build = target.parent / f".{target.name}.build-{os.getpid()}"
    if build.exists():
        shutil.rmtree(build)
    build.mkdir(parents=True)
    return build


def publish(build: Path, target: Path) -> None:
    """Put the finished folder ``build`` in ``target``'s place.

    Readers see the old report or the new one, never a mix: an atomic exchange of the two
    folders where the system has one (Linux), else two renames that :func:`recover` completes
    or undoes after a crash between them.
    """
    if target.exists():
        if _exchange(build, target):
            shutil.rmtree(build, ignore_errors=True)  # now holds the old report
            return
        old = old_path(target)
        if old.exists():
            shutil.rmtree(old)
        os.rename(target, old)
        os.rename(build, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(build, target)


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)


# --------------------------------------------------------------------------- the run's pages


def fmt(v: Any, digits: int = 4) -> str:
    """A value for a table cell: ``—`` for none, floats to ``digits`` significant digits."""
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _timings(summary: Mapping[str, Any]) -> str:
    """Per stage, the figures of the last run that computed it: busy seconds (the tasks'
    own work) with img/s from them, the span, and when that run was."""
    def busy(s: Mapping[str, Any]) -> Any:  # summary.json of an older run: span only
        return s.get("busy_seconds", s.get("seconds"))

    rows = [(s["stage"], f"{s['units_run']}/{s['units_total']}", s["images"],
             fmt(busy(s)), fmt(s.get("img_per_s")), fmt(s.get("span_seconds")),
             "" if s.get("device_idle") is None else f"{100 * s['device_idle']:.0f}%",
             s.get("computed_by_run", ""), ", ".join(s.get("workers") or ()))
            for s in summary["stages"]]
    runs = summary.get("history") or []
    last = runs[-1] if runs else {}
    did = sum((last.get("units_run") or {}).values()) if last else None
    this = ("" if did is None else
            " This command recomputed nothing: the figures are those of the runs that did "
            "the work." if did == 0 else "")
    return ("<h2>Stage timings</h2>"
            f"<p class=muted>Per stage, the last run that computed it. Busy: the tasks' own "
            f"work, which img/s comes from; span: first start to last end, which covers "
            f"waiting when stages stream. This command took {fmt(summary.get('seconds'))} s "
            f"of wall time.{this}</p>"
            + table(rows, ["stage", "units run", "images", "busy s", "img/s", "span s",
                           "device idle", "computed by the run of", "workers"]))


def summary_page(title: str, facts: Sequence[tuple[str, Any]], versions: Mapping[str, str],
                 summary: Mapping[str, Any] | None, evaluation: Mapping[str, Any],
                 notes: Sequence[str], plots: Sequence[str],
                 skipped: Sequence[tuple[str, str]], signs: Mapping[str, str] | None = None,
                 sanity_plot: str | None = None) -> str:
    """``summary.html``: which method to trust first (:func:`trust_sections`: the methods ×
    metrics overview, the signed-map caveat, the sanity check), then run facts, package
    versions, stage timings, completeness, every metric in detail, plots and the skipped
    images.

    Parameters
    ----------
    facts
        ``(name, value)`` rows of the run table.
    summary
        The run's ``summary.json`` (stage timings, completeness), or None.
    evaluation
        The evaluation summary (empty: no evaluation).
    plots
        Relative paths of the plot images, shown in this order.
    signs
        Per method, ``"signed"``, ``"absolute"`` or ``"non-negative"`` (None: unknown).
    sanity_plot
        The randomisation curves' figure (relative path), shown in the sanity section.
    """
    e = esc
    parts = [f'<div class="banner bad">{e(note)}</div>' for note in notes]
    parts += trust_sections(evaluation, signs or {}, sanity_plot)
    parts.append("<h2>Run</h2>" + table(facts))
    if versions:
        parts.append("<h2>Package versions</h2>" + table(sorted(versions.items())))
    if summary and summary.get("stages"):
        parts.append(_timings(summary))
    comp = (summary or {}).get("completeness") or []
    if comp:
        rows_c = [(c["method"], c["images"], f"{100 * c['median']:.3g}%",
                   f"{100 * c['worst']:.3g}%", c["worst_image"], len(c["flagged"]))
                  for c in comp]
        parts.append("<h2>Completeness of the Integrated Gradients methods</h2>"
                     + table(rows_c, ["method", "images", "median error", "worst error",
                                      "worst image", "above the warning"]))
    parts += _evaluation_sections(evaluation)
    if plots:
        parts.append("<h2>Plots</h2><div class=plots>" + "".join(
            f'<p><img src="{e(p)}" alt="{e(Path(p).stem)}"></p>' for p in plots) + "</div>")
    if skipped:
        shown = skipped[:500]
        parts.append(f"<h2>Skipped images ({len(skipped)})</h2>"
                     + table(shown, ["image", "reason"])
                     + (f"<p class=muted>… and {len(skipped) - 500} more.</p>"
                        if len(skipped) > 500 else ""))
    return page(f"{title}: summary", "summary.html", "".join(parts))


def _evaluation_sections(evaluation: Mapping[str, Any]) -> list[str]:
    if not evaluation.get("metrics"):
        return []
    rows = []
    for name, entry in evaluation["metrics"].items():
        for m, b in [*entry["methods"].items(), ("random maps", entry["random"])]:
            ci = "—" if b["mean"] is None else \
                f"{b['mean']:.4g} [{b['low']:.4g}, {b['high']:.4g}]"
            rows.append((name, entry["better"], m, ci, b["n"]))
    return [f"<details id=evaluation-detail><summary><h2>Evaluation, metric by metric "
            f"({len(rows)} rows)</h2></summary><p class=muted>Means with 95% bootstrap "
            "intervals; random maps are the floor.</p>"
            + table(rows, ["metric", "better", "method", "mean [95% CI]", "images"])
            + "</details>"]


# --------------------------------------------------------------------------- which method


#: The sanity check's line: a method's maps depend on the model where the mean |Spearman|
#: between the randomised and the trained model's maps falls below this. Above it, the maps
#: still rank the pixels mostly as before, whatever the weights (Adebayo et al. 2018). The
#: absolute value: a map whose sign flips with a random classifier keeps its structure.
SANITY_THRESHOLD = 0.5

#: Short names of the metrics on the gallery's tiles (the full name is on hover and in the
#: legend); a metric not listed shows its first six letters.
SHORT_METRIC_NAMES: dict[str, str] = {
    "deletion": "del", "insertion": "ins", "relevance_mass_accuracy": "mass",
    "relevance_rank_accuracy": "rank", "pointing_game": "point", "sparseness": "sparse",
}

#: How each kind of map treats negative attribution (see :func:`sign_caveat`).
SIGN_WORDS: dict[str, str] = {
    "signed": "signed", "absolute": "absolute (|·|)", "non-negative": "non-negative (ReLU)",
}


def short_metric(name: str) -> str:
    """A metric's short name for the gallery's tiles."""
    return SHORT_METRIC_NAMES.get(name, name[:6])


def arrow(better: str) -> str:
    """``↑`` where higher is better, ``↓`` where lower is."""
    return "↑" if better == "higher" else "↓"


@dataclass(frozen=True)
class Verdict:
    """What the randomisation test says of one method's maps.

    Attributes
    ----------
    method
        The method.
    kind
        ``"depends"`` (|ρ| below :data:`SANITY_THRESHOLD` once the top layer group is
        randomised), ``"lower"`` (only once lower groups are randomised too),
        ``"independent"`` (never) or ``"untested"``.
    short
        A few words for the overview table.
    sentence
        One sentence for the sanity section.
    """

    method: str
    kind: str
    short: str
    sentence: str


def _group_words(group: str) -> str:
    return ", ".join(group.split("+"))


def _rho(b: Mapping[str, Any]) -> str:
    return f"{b['mean']:.2f} [{b['low']:.2f}, {b['high']:.2f}]"


def sanity_verdict(method: str, curve: Mapping[str, Mapping[str, Any]],
                   threshold: float = SANITY_THRESHOLD) -> Verdict:
    """The verdict of one method's cascading-randomisation curve.

    Parameters
    ----------
    method
        The method's name (for the sentence).
    curve
        Per layer group, top-down, in the order they were randomised (e.g. ``fc``,
        ``layer4``, ...): the mean Spearman correlation to the trained model's maps with its
        95% interval (``mean``, ``low``, ``high``; ``mean`` None where no image was tested).
    threshold
        The line on the mean ``|ρ|`` (:data:`SANITY_THRESHOLD`).
    """
    points = [(g, b) for g, b in curve.items() if b.get("mean") is not None]
    if not points:
        return Verdict(method, "untested", "not tested",
                       f"{method}: not tested (no image took part in the randomisation test; "
                       "raise [evaluate] randomisation_images).")
    first_group, first = points[0]
    below = next((k for k, (_g, b) in enumerate(points) if abs(b["mean"]) < threshold), None)
    if below == 0:
        return Verdict(method, "depends", "depends on the model",
                       f"{method}: its maps depend on the model. Once the top layer group "
                       f"({_group_words(first_group)}) is randomised, their Spearman "
                       f"correlation with the trained model's maps is {_rho(first)}, "
                       f"below |ρ| = {threshold:g}.")
    if below is not None:
        group, b = points[below]
        return Verdict(method, "lower", "lower layers only",
                       f"{method}: its maps depend on the lower layers only. They keep a "
                       f"Spearman correlation of {_rho(first)} after the top layer group "
                       f"({_group_words(first_group)}) is randomised, and fall below "
                       f"|ρ| = {threshold:g} only once {_group_words(group)} is randomised "
                       f"too ({_rho(b)}): they show what the features respond to more than "
                       "what the classifier decided.")
    last_group, last = points[-1]
    return Verdict(method, "independent", "does not depend on the model",
                   f"{method}: its maps do not depend on the model. With every layer group "
                   f"randomised (down to {_group_words(last_group)}) they keep a Spearman "
                   f"correlation of {_rho(last)} with the trained model's maps (|ρ| ≥ "
                   f"{threshold:g}): do not read them as explanations of this model.")


def sanity_verdicts(evaluation: Mapping[str, Any], threshold: float = SANITY_THRESHOLD
                    ) -> dict[str, Verdict]:
    """:func:`sanity_verdict` of every method in the evaluation's randomisation test."""
    return {m: sanity_verdict(m, curve, threshold)
            for m, curve in (evaluation.get("randomisation") or {}).items()}


def sign_caveat(signs: Mapping[str, str]) -> str | None:
    """The warning for a ranking that mixes signed maps with absolute (or non-negative)
    ones, or None when all the maps are of one kind.

    Parameters
    ----------
    signs
        Per method: ``"signed"``, ``"absolute"`` or ``"non-negative"``.
    """
    signed = [m for m, s in signs.items() if s == "signed"]
    unsigned = [m for m, s in signs.items() if s != "signed"]
    if not signed or not unsigned:
        return None
    kinds = ", ".join(f"{m}: {SIGN_WORDS.get(signs[m], signs[m])}" for m in unsigned)
    return (f"Signed and unsigned maps are ranked side by side. The signed maps "
            f"({', '.join(signed)}) are scored by their signed value: deletion, insertion, "
            "rank accuracy and the pointing game order the pixels by it, and relevance mass "
            "counts positive attribution only, so evidence against the class ranks last. The "
            f"unsigned maps ({kinds}) rank strong evidence either way first. A difference "
            "between the two groups can be this convention rather than the method: compare "
            "within a group, or make a signed method absolute where it has the parameter "
            "(custom_gradient: absolute = true).")


def _stat(b: Mapping[str, Any] | None) -> tuple[float, float, float] | None:
    if not b or b.get("mean") is None:
        return None
    return float(b["mean"]), float(b["low"]), float(b["high"])


def _cell(b: Mapping[str, Any] | None, classes: Sequence[str] = (), mark: str = "",
          title: str = "") -> str:
    s = _stat(b)
    if s is None:
        return '<td class="na">—</td>'
    mean, low, high = s
    cls = f' class="{" ".join(classes)}"' if classes else ""
    tip = f' title="{esc(title)}"' if title else ""
    n = (b or {}).get("n")
    return (f"<td{cls}{tip} data-n=\"{esc(n)}\">{mark}<span class=mean>{mean:.3g}</span> "
            f"<span class=ci>[{low:.3g}, {high:.3g}]</span></td>")


def _best(values: Mapping[str, tuple[float, float, float] | None], higher: bool) -> set[str]:
    means = {m: v[0] for m, v in values.items() if v is not None}
    if not means:
        return set()
    top = max(means.values()) if higher else min(means.values())
    return {m for m, v in means.items() if v == top}


def _beats_floor(v: tuple[float, float, float], floor: tuple[float, float, float] | None,
                 higher: bool) -> bool:
    """Whether a method's mean lies beyond the random floor's 95% interval."""
    if floor is None:
        return True
    return v[0] > floor[2] if higher else v[0] < floor[1]


def overview_table(evaluation: Mapping[str, Any], signs: Mapping[str, str],
                   verdicts: Mapping[str, Verdict]) -> str:
    """The methods × metrics table: per method (and the random floor, its own row) each
    metric's mean with its 95% interval; the best mean per column marked (``class=best``,
    ★), means inside the floor's interval muted (``class=chance``); the map's sign and the
    sanity check's verdict per method.

    Parameters
    ----------
    evaluation
        The evaluation summary: ``metrics[name]`` with ``better``, ``description``,
        ``methods[method]`` and ``random`` (``mean``, ``low``, ``high``, ``n``).
    signs
        Per method, how its maps treat negative attribution (:func:`sign_caveat`).
    verdicts
        Per method, the sanity check (:func:`sanity_verdicts`); empty: no column.
    """
    metrics = evaluation["metrics"]
    methods = list(dict.fromkeys(m for e in metrics.values() for m in e["methods"]))
    head = ["<th>method</th><th>map</th>"]
    for name, entry in metrics.items():
        better = entry["better"]
        head.append(f'<th title="{esc(entry.get("description", ""))}">{esc(name)}<br>'
                    f"<small>{arrow(better)} {esc(better)} is better</small></th>")
    if verdicts:
        head.append("<th>model randomisation<br><small>sanity check</small></th>")
    rows = ["<tr>" + "".join(head) + "</tr>"]
    best = {name: _best({m: _stat(e["methods"].get(m)) for m in methods},
                        e["better"] == "higher") for name, e in metrics.items()}
    for m in methods:
        cells = [f"<th scope=row>{esc(m)}</th><td>{esc(signs.get(m, '—'))}</td>"]
        for name, entry in metrics.items():
            higher = entry["better"] == "higher"
            b = entry["methods"].get(m)
            s = _stat(b)
            classes, mark, title = [], "", ""
            if s is not None and m in best[name]:
                classes.append("best")
                mark, title = "★ ", f"best {name} of the methods ({entry['better']} is better)"
            if s is not None and not _beats_floor(s, _stat(entry["random"]), higher):
                classes.append("chance")
                title = ((title + "; " if title else "")
                         + "does not beat the random floor's 95% interval")
            cells.append(_cell(b, classes, mark, title))
        if verdicts:
            v = verdicts.get(m)
            cells.append(f'<td class="verdict {v.kind}">{esc(v.short)}</td>' if v
                         else '<td class="na">—</td>')
        rows.append(f'<tr data-method="{esc(m)}">' + "".join(cells) + "</tr>")
    floor = ["<th scope=row>random maps (floor)</th><td>—</td>"]
    floor += [_cell(e["random"], ["floor"]) for e in metrics.values()]
    if verdicts:
        floor.append('<td class="na">—</td>')
    rows.append('<tr class="floor-row" data-method="random">' + "".join(floor) + "</tr>")
    return "<table class=overview>" + "".join(rows) + "</table>"


def _sanity_table(evaluation: Mapping[str, Any], threshold: float) -> str:
    randomisation = evaluation.get("randomisation") or {}
    groups = list(dict.fromkeys(g for curve in randomisation.values() for g in curve))
    head = "".join(f"<th>{'' if k == 0 else '+ '}{esc(_group_words(g))}</th>"
                   for k, g in enumerate(groups))
    rows = [f"<tr><th>method</th><th>trained</th>{head}</tr>"]
    for m, curve in randomisation.items():
        cells = []
        for g in groups:
            b = curve.get(g)
            s = _stat(b)
            cls = ["changed"] if s is not None and abs(s[0]) < threshold else []
            cells.append(_cell(b, cls))
        rows.append(f'<tr data-method="{esc(m)}"><th scope=row>{esc(m)}</th><td>1</td>'
                    + "".join(cells) + "</tr>")
    return "<table class=sanity>" + "".join(rows) + "</table>"


def trust_sections(evaluation: Mapping[str, Any], signs: Mapping[str, str],
                   sanity_plot: str | None = None, threshold: float = SANITY_THRESHOLD
                   ) -> list[str]:
    """The summary page's answer first: the methods × metrics overview, the signed-map
    caveat, and the sanity section (the randomisation curves and one verdict per method).

    Parameters
    ----------
    evaluation
        The evaluation summary (empty: the run was not evaluated; the section says how to).
    signs
        Per method, ``"signed"``, ``"absolute"`` or ``"non-negative"``.
    sanity_plot
        The randomisation curves' figure, relative to the report folder.
    threshold
        The sanity check's line (:data:`SANITY_THRESHOLD`).
    """
    if not evaluation.get("metrics"):
        return ["<section id=trust><h2>Which method to trust</h2><p class=muted>Not "
                "evaluated: add an <code>[evaluate]</code> table with metrics to the config "
                "(configs/evidence.toml has one) to compare the methods here.</p></section>"]
    verdicts = sanity_verdicts(evaluation, threshold)
    out = ["<section id=trust><h2>Which method to trust</h2>"
           "<p class=muted>Rows: methods; columns: metrics, each with its direction. Each "
           "cell is the mean over the images with its 95% bootstrap interval; ★ marks the "
           "best mean of a column; a greyed mean does not beat the random maps' 95% interval, "
           "the floor every method must beat. The last column is the sanity check below.</p>"
           + overview_table(evaluation, signs, verdicts)]
    caveat = sign_caveat(signs)
    if caveat:
        out.append(f'<div class="banner caveat" id=sign-caveat>{esc(caveat)}</div>')
    out += [f"<p class=muted>{esc(note)}</p>" for note in evaluation.get("notes", [])]
    out.append("</section>")
    out.append(_sanity_section(evaluation, verdicts, sanity_plot, threshold))
    return out


def _sanity_section(evaluation: Mapping[str, Any], verdicts: Mapping[str, Verdict],
                    sanity_plot: str | None, threshold: float) -> str:
    parts = ["<section id=sanity><h2>Sanity check: model randomisation</h2>"]
    if not verdicts:
        parts.append("<p class=muted>Not run: set [evaluate] randomisation_images above 0 "
                     "to test whether the maps depend on the model.</p></section>")
        return "".join(parts)
    parts.append(
        "<p>Cascading randomisation (Adebayo et al. 2018): the model's layer groups are "
        "re-initialised from the top down (the classifier first, the earlier groups staying "
        "random), each method's maps are recomputed, and the curve is their mean Spearman "
        "correlation with the trained model's maps (95% intervals). Maps that explain the "
        "model change once it does. The line: a method depends on the model where the mean "
        f"|ρ| falls below {threshold:g} (|ρ|, as a map whose sign flips keeps its "
        "structure).</p>")
    if sanity_plot:
        parts.append(f'<p class=plots><img src="{esc(sanity_plot)}" '
                     'alt="cascading randomisation curves"></p>')
    parts.append(_sanity_table(evaluation, threshold))
    parts.append("<ul class=verdicts>" + "".join(
        f'<li class="verdict {v.kind}" data-method="{esc(m)}">{esc(v.sentence)}</li>'
        for m, v in verdicts.items()) + "</ul></section>")
    return "".join(parts)


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


#: The mask outline's colour on the gallery's tiles (absent from the offered colormaps'
#: dark ends and from most photos).
OUTLINE_RGBA = (0, 229, 255, 255)


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


@dataclass(frozen=True)
class StrategySettings:
    """What the strategies page says about how the clusters were made (``[report]``)."""

    min_images: int
    downsample: int
    neighbors: int
    max_clusters: int
    members: int


def strategies_page(title: str, clusters: Mapping[str, list[Cluster]],
                    facts: Mapping[str, Any], methods: Sequence[str], classes: Sequence[str],
                    sprites: Sprites, notes: Sequence[str], settings: StrategySettings,
                    colormap: str, planted: int = -1) -> str:
    """``strategies.html``: per method and class, each cluster's mean map, size and a few
    members (crops and maps).

    Parameters
    ----------
    clusters
        Per method, its clusters (:class:`pipeline.evaluation.spray.Cluster`).
    facts
        ``note`` (why nothing was clustered) and ``purity`` (per method, on a planted
        shortcut: ``class``, ``images``, ``watermarked``, ``clusters``, ``purity``).
    methods
        The run's methods, in the order of their map folders ``img/m<j>``.
    planted
        The class with a planted shortcut (shown first), -1 for none.
    """
    e = esc
    rc = settings
    parts = [svg_filters([], default=colormap)]
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
                     + table(rows, ["method", "class", "images", "watermarked",
                                    "clusters", "purity"]))
    any_cluster = False
    for j, m in enumerate(methods):
        if clusters.get(m):
            any_cluster = True
            parts.append(_method_section(j, m, clusters[m], classes, sprites, rc.members,
                                         planted))
    if not any_cluster and not facts.get("note"):
        parts.append(f"<p class=muted>No predicted class has {rc.min_images} or more "
                     "explained images, so nothing was clustered ([report] min_images).</p>")
    return page(f"{title}: explanation strategies", "strategies.html", "".join(parts),
                f'<link rel=stylesheet href="{SPRITES_CSS}">')


def _method_section(j: int, method: str, found: Sequence[Cluster], classes: Sequence[str],
                    sprites: Sprites, members: int, planted: int) -> str:
    e = esc
    parts = [f"<section class=method><h2>{e(method)}</h2>"]
    by_class: dict[int, list[Cluster]] = {}
    for cl in found:
        by_class.setdefault(cl.cls, []).append(cl)
    for c, cls_clusters in sorted(by_class.items(), key=_class_order(planted)):
        total = sum(len(x.members) for x in cls_clusters)
        parts.append(f"<section class=cls><h3>{e(classes[c] if c < len(classes) else c)}"
                     f" <span class=muted>({total} images, {len(cls_clusters)} "
                     f"cluster{'s' if len(cls_clusters) > 1 else ''})</span></h3>"
                     "<div class=clusters>")
        for cl in cls_clusters:
            mean = mean_map_path(j, cl)
            wm = "" if cl.watermark is None else f", {cl.watermark} with the watermark"
            shown = cl.members[:members]
            maps = "".join(sprites.img(map_kind(j), i, f"image {i + 1}") for i in shown)
            crops = "".join(sprites.img(CROP, i, f"image {i + 1}") for i in shown)
            parts.append(
                f'<div class=cluster><b>cluster {cl.number}</b>: {len(cl.members)} '
                f"images{e(wm)}<br><img class=mean src=\"{mean}\" alt=\"mean map\">"
                f"<div class=members>{crops}</div><div class=\"members maps\">{maps}"
                "</div></div>")
        parts.append("</div></section>")
    parts.append("</section>")
    return "".join(parts)


def _class_order(planted: int) -> Any:
    """Sort key: the planted shortcut's class first, then classes with more strategies, then
    bigger ones."""
    def key(kv: tuple[int, list[Cluster]]) -> tuple[bool, int, int]:
        return (kv[0] != planted, -len(kv[1]), -sum(len(x.members) for x in kv[1]))
    return key


def mean_map_path(method_slot: int, cluster: Cluster) -> str:
    """A cluster's mean map, relative to the report folder."""
    return f"img/s/m{method_slot}/c{cluster.cls}-{cluster.number}.png"


def mean_maps(clusters: Mapping[str, list[Cluster]], methods: Sequence[str], size: int,
              colormap: str) -> dict[str, bytes]:
    """Every cluster's mean map as a PNG, by its path (:func:`mean_map_path`)."""
    return {mean_map_path(j, cl): mean_map_png(cl.mean, size, colormap)
            for j, m in enumerate(methods) for cl in clusters.get(m, [])}
