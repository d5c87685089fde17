"""``index.html``, the gallery: a frame (the template ``gallery.html``) that its script,
``assets/gallery.js``, fills from the data scripts: ``data/manifest.js`` (this module's
:func:`manifest`) and a ``data/shard-NNNNNN.js`` per shard of rows (:func:`gallery_row`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.report.templating import colormap_tables, render
from pipeline.report.verdicts import short_metric

#: Colormaps the page offers (the run's ``[render] colormap`` is added when missing).
COLORMAPS: tuple[str, ...] = ("inferno", "viridis", "magma", "turbo", "gray")


def gallery_html(title: str, colormaps: Sequence[str]) -> str:
    """``index.html``: the frame the gallery script fills (no data in it), with a colormap
    filter per entry of ``colormaps``."""
    return render("gallery.html", title=title, current="index.html",
                  filters=[(name, colormap_tables(name)) for name in colormaps])


@dataclass(frozen=True)
class MethodEntry:
    """A method as the gallery lists it: its name, whether it is an Integrated Gradients
    method (its tiles show the completeness error), and how its maps treat sign."""

    name: str
    ig: bool
    sign: str


@dataclass(frozen=True)
class MetricEntry:
    """A metric as the gallery lists it: its name, direction and description."""

    name: str
    higher: bool
    description: str


def manifest(*, title: str, dataset: str, images: int, classes: Sequence[str],
             colormaps: Sequence[str], colormap: str, target: str, notes: Sequence[str],
             bad: bool, methods: Sequence[MethodEntry], metrics: Sequence[MetricEntry],
             shards: Sequence[Mapping[str, Any]], strategies: str | None) -> dict[str, Any]:
    """``data/manifest.js``'s object, which ``gallery.js`` reads first: the run's words
    (``title``, ``notes``; ``bad``: the banner is red), its classes, colormaps, methods and
    metrics (with the metrics' short names, :func:`pipeline.report.verdicts.short_metric`),
    the shards' row files (``index``, ``file``) and the strategies' data script, if any."""
    return {
        "title": title, "dataset": dataset, "images": images, "classes": list(classes),
        "colormaps": list(colormaps), "colormap": colormap, "target": target,
        "notes": list(notes), "bad": bad,
        "methods": [{"name": m.name, "ig": m.ig, "sign": m.sign} for m in methods],
        "metrics": [{"name": m.name, "higher": m.higher, "short": short_metric(m.name),
                     "description": m.description} for m in metrics],
        "shards": [dict(s) for s in shards], "strategies": strategies,
    }


def gallery_row(*, index: int, image_id: str, status: str, crop: bool, outline: bool,
                maps: Sequence[bool], pred: int, prob: float | None, label: int,
                deltas: Sequence[float | None],
                scores: Mapping[str, Sequence[float | None]]) -> dict[str, Any]:
    """One image's row in a ``data/shard-NNNNNN.js`` (``gallery.js`` reads these keys; short,
    as there are thousands): ``i`` index, ``id`` image id, ``st`` status, ``c`` has a crop,
    ``o`` has a mask outline, ``m`` has a map (per method), ``p`` predicted class, ``pr`` its
    probability, ``t`` label, ``d`` relative completeness error (per method; None: not an IG
    method or not current), ``s`` metric scores (per metric, per method)."""
    return {"i": index, "id": image_id, "st": status, "c": crop, "o": outline,
            "m": list(maps), "p": pred, "pr": prob, "t": label, "d": list(deltas),
            "s": {m: list(v) for m, v in scores.items()}}
