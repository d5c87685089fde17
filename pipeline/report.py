"""The static HTML report: encodings, pages and the atomic publication of its folder.

The report is a folder that opens from the disk (``file://``) with no server and no network:

``index.html``
    the gallery (``assets/gallery.js``): one card per image, sorted and filtered in the page.
``summary.html``, ``strategies.html``
    run facts and plots; the explanation strategies (:mod:`pipeline.spray`). Made here, with
    every string escaped.
``data/manifest.js``, ``data/shard-NNNNNN.js``, ``data/strategies.js``
    the data, as JSON wrapped in a script (browsers refuse ``fetch`` of ``file://`` URLs, but
    load scripts from the page's folder). Strings are JSON-escaped with ``<``, ``>`` and
    ``&`` as ``\\u003c``-style escapes, so no string can close a tag.
``img/c/<shard>/<index>.jpg``, ``img/m<method>/<shard>/<index>.png``
    crops and grey-level maps; the page colours maps with SVG filters (a colormap is a
    per-channel lookup table, :func:`svg_filters`), so switching colormaps needs no new files.
    Paths hold numbers only, never an image's name.

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
from pathlib import Path
from typing import Any

import numpy as np

#: The static files of the page (copied into ``assets/``).
RESOURCES = Path(__file__).parent / "resources" / "report"
#: Colormaps the page offers (the run's ``[render] colormap`` is added when missing).
COLORMAPS: tuple[str, ...] = ("inferno", "viridis", "magma", "turbo", "gray")
#: Entries per channel in an SVG colormap table (linearly interpolated by the browser).
TABLE_SIZE = 64


def crop_path(shard: int, index: int) -> str:
    """The crop of image ``index`` (in shard ``shard``), relative to the report folder."""
    return f"img/c/{shard:06d}/{index:06d}.jpg"


def map_path(method_slot: int, shard: int, index: int) -> str:
    """The grey-level map of image ``index`` for the method in slot ``method_slot``."""
    return f"img/m{method_slot}/{shard:06d}/{index:06d}.png"


def shard_data_path(shard: int) -> str:
    return f"data/shard-{shard:06d}.js"


def map_png(values: np.ndarray) -> bytes:
    """A display map ``(H, W)`` in [0, 1] (NaN: 0) as a grey-level PNG."""
    from PIL import Image

    v = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0)
    grey = (np.clip(v, 0.0, 1.0) * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def crop_jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    """A crop ``(H, W, 3)`` uint8 as JPEG."""
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
    from pipeline.render import colormap_lut

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


def figure_png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes (closed afterwards)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buf.getvalue()


def mean_map_png(features: np.ndarray, size: int, colormap: str, scale: int = 4) -> bytes:
    """A cluster's mean downsampled map ``(size * size,)`` as a coloured PNG, enlarged."""
    from PIL import Image

    from pipeline.render import colormap_lut

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
