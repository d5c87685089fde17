"""``strategies.html``: the explanation strategies (SpRAy clusters,
:mod:`pipeline.evaluation.spray`) per method and predicted class: each cluster's mean map, its
size and a few members (crops and maps, from the sprites).

This module turns the clusters into what the template ``strategies.html`` shows; the HTML is
the template's, every value escaped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.evaluation.spray import Cluster
from pipeline.report.sprites import CROP, SPRITES_CSS, Sprites, map_kind
from pipeline.report.templating import colormap_tables, render
from pipeline.report.tile_files import mean_map_png


@dataclass(frozen=True)
class StrategySettings:
    """What the strategies page says about how the clusters were made (``[report]``)."""

    min_images: int
    downsample: int
    neighbors: int
    max_clusters: int
    members: int


@dataclass(frozen=True)
class ClusterView:
    """A cluster as the page shows it: its number, size, watermark words (``""``: not a
    planted-shortcut class), mean map (a path) and the members shown (image indices)."""

    number: int
    images: int
    watermark: str
    mean_map: str
    shown: list[int]


@dataclass(frozen=True)
class ClassView:
    """A predicted class's clusters: its name and the images they hold in all."""

    name: str
    images: int
    clusters: list[ClusterView]


@dataclass(frozen=True)
class MethodView:
    """A method's section: its name, its maps' tile kind, its classes."""

    name: str
    kind: str
    classes: list[ClassView]


def mean_map_path(method_slot: int, cluster: Cluster) -> str:
    """A cluster's mean map, relative to the report folder."""
    return f"img/s/m{method_slot}/c{cluster.cls}-{cluster.number}.png"


def mean_maps(clusters: Mapping[str, list[Cluster]], methods: Sequence[str], size: int,
              colormap: str) -> dict[str, bytes]:
    """Every cluster's mean map as a PNG, by its path (:func:`mean_map_path`)."""
    return {mean_map_path(j, cl): mean_map_png(cl.mean, size, colormap)
            for j, m in enumerate(methods) for cl in clusters.get(m, [])}


def _class_order(planted: int) -> Callable[[tuple[int, list[Cluster]]], tuple[bool, int, int]]:
    """Sort key: the planted shortcut's class first, then classes with more strategies, then
    bigger ones."""
    def key(kv: tuple[int, list[Cluster]]) -> tuple[bool, int, int]:
        return (kv[0] != planted, -len(kv[1]), -sum(len(x.members) for x in kv[1]))
    return key


def _class_name(classes: Sequence[str], c: int) -> Any:
    """Class ``c``'s name, or its number where the run has no name for it."""
    return classes[c] if c < len(classes) else c


def method_view(j: int, method: str, found: Sequence[Cluster], classes: Sequence[str],
                members: int, planted: int) -> MethodView:
    """The section of the method in slot ``j``: its clusters by class (:func:`_class_order`),
    ``members`` of each shown."""
    by_class: dict[int, list[Cluster]] = {}
    for cl in found:
        by_class.setdefault(cl.cls, []).append(cl)
    views = []
    for c, cls_clusters in sorted(by_class.items(), key=_class_order(planted)):
        shown = [ClusterView(cl.number, len(cl.members),
                             "" if cl.watermark is None
                             else f", {cl.watermark} with the watermark",
                             mean_map_path(j, cl), list(cl.members[:members]))
                 for cl in cls_clusters]
        views.append(ClassView(_class_name(classes, c), sum(len(x.members) for x in cls_clusters),
                               shown))
    return MethodView(method, map_kind(j), views)


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
    purity = [(m, _class_name(classes, p["class"]), p["images"], p["watermarked"],
               p["clusters"], f"{p['purity']:.3f}")
              for m, p in (facts.get("purity") or {}).items()]
    sections = [method_view(j, m, clusters[m], classes, settings.members, planted)
                for j, m in enumerate(methods) if clusters.get(m)]
    return render("strategies.html", title=f"{title}: explanation strategies",
                  current="strategies.html", sprites_css=SPRITES_CSS,
                  filters=[("default", colormap_tables(colormap))], notes=notes,
                  settings=settings, note=facts.get("note"), purity=purity, methods=sections,
                  sprites=sprites, crop_kind=CROP)
