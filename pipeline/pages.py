"""The static HTML report's pages: encodings, the gallery, summary and strategies pages, and the
atomic publication of the report's folder (library code: plain data in, HTML out).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.spray import Cluster

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


# --------------------------------------------------------------------------- the run's pages


def fmt(v: Any, digits: int = 4) -> str:
    """A value for a table cell: ``—`` for none, floats to ``digits`` significant digits."""
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def summary_page(title: str, facts: Sequence[tuple[str, Any]], versions: Mapping[str, str],
                 summary: Mapping[str, Any] | None, evaluation: Mapping[str, Any],
                 notes: Sequence[str], plots: Sequence[str],
                 skipped: Sequence[tuple[str, str]]) -> str:
    """``summary.html``: run facts, package versions, stage timings, completeness, metrics,
    plots and the skipped images.

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
    """
    e = esc
    parts = [f'<div class="banner bad">{e(note)}</div>' for note in notes]
    parts.append("<h2>Run</h2>" + table(facts))
    if versions:
        parts.append("<h2>Package versions</h2>" + table(sorted(versions.items())))
    if summary and summary.get("stages"):
        rows = [(s["stage"], f"{s['units_run']}/{s['units_total']}", s["images"],
                 fmt(s["seconds"]), fmt(s.get("img_per_s")), ", ".join(s["workers"]))
                for s in summary["stages"]]
        parts.append("<h2>Stage timings</h2>"
                     f"<p class=muted>Whole run: {fmt(summary.get('seconds'))} s "
                     f"(stages add up to {fmt(summary.get('sum_of_stage_seconds'))} s; "
                     "they overlap when streaming).</p>"
                     + table(rows, ["stage", "units run", "images", "seconds", "img/s",
                                    "workers"]))
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
    out = ["<h2>Evaluation</h2><p class=muted>Means with 95% bootstrap intervals; random maps "
           "are the floor.</p>"
           + table(rows, ["metric", "better", "method", "mean [95% CI]", "images"])]
    out += [f"<p class=muted>{esc(note)}</p>" for note in evaluation.get("notes", [])]
    return out


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
                    shard_size: int, notes: Sequence[str], settings: StrategySettings,
                    colormap: str, planted: int = -1) -> str:
    """``strategies.html``: per method and class, each cluster's mean map, size and a few
    members (crops and maps).

    Parameters
    ----------
    clusters
        Per method, its clusters (:class:`pipeline.spray.Cluster`).
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
            parts.append(_method_section(j, m, clusters[m], classes, shard_size, rc.members,
                                         planted))
    if not any_cluster and not facts.get("note"):
        parts.append(f"<p class=muted>No predicted class has {rc.min_images} or more "
                     "explained images, so nothing was clustered ([report] min_images).</p>")
    return page(f"{title}: explanation strategies", "strategies.html", "".join(parts))


def _method_section(j: int, method: str, found: Sequence[Cluster], classes: Sequence[str],
                    shard_size: int, members: int, planted: int) -> str:
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
            maps = "".join(f'<img loading=lazy src="{map_path(j, i // shard_size, i)}" '
                           f'alt="image {i + 1}" title="image {i + 1}">' for i in shown)
            crops = "".join(f'<img loading=lazy src="{crop_path(i // shard_size, i)}" '
                            f'alt="image {i + 1}" title="image {i + 1}">' for i in shown)
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
