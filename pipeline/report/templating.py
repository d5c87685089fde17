"""The report's Jinja2 environment: its HTML comes from the templates in
``pipeline/resources/report/templates``, every value escaped (autoescape on).

Templates are written indented, an element a line, for reading; :class:`JoinLines` joins
their lines when they are loaded, so a page is as compact as if it were written on one line.
Two lines are joined with nothing where the break is next to markup: the first ends with a
tag, a block or a comment (``>``, ``%}``, ``#}``), the next starts with one (``<``, ``{%``,
``{#``), or either holds one ``{{ ... }}`` alone (a part, such as a macro's table). Any other
break (inside prose) becomes one space. Blank lines go. A page that needs a real line break
writes ``{{ "\\n" }}``.

:func:`svg_filters`, the colormap filters, is here too: the gallery and the strategies pages
share it.
"""

from __future__ import annotations

import itertools
import re
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from jinja2.ext import Extension

#: The report's static files (copied into ``assets/``) and, in ``templates/``, its pages.
RESOURCES = Path(__file__).parent.parent / "resources" / "report"
TEMPLATES = RESOURCES / "templates"
#: Entries per channel in an SVG colormap table (linearly interpolated by the browser).
TABLE_SIZE = 64

_ENDS_MARKUP = (">", "%}", "#}")
_STARTS_MARKUP = ("<", "{%", "{#")
_EXPRESSION = re.compile(r"\{\{[^{}]*\}\}")


def _is_markup_end(line: str) -> bool:
    return line.endswith(_ENDS_MARKUP) or _EXPRESSION.fullmatch(line) is not None


def _is_markup_start(line: str) -> bool:
    return line.startswith(_STARTS_MARKUP) or _EXPRESSION.fullmatch(line) is not None


def join_lines(source: str) -> str:
    """A template's source with its lines joined (see the module's docstring): a break next
    to markup goes, a break inside prose becomes one space, blank lines go."""
    lines = [line.strip() for line in source.splitlines() if line.strip()]
    out = lines[:1]
    for prev, line in itertools.pairwise(lines):
        out.append(line if _is_markup_end(prev) or _is_markup_start(line) else " " + line)
    return "".join(out)


class JoinLines(Extension):
    """Joins a template's lines as it is loaded (:func:`join_lines`)."""

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        return join_lines(source)


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``, the noun plural unless the count is one: ``1 image``,
    ``3 images``, ``0 classes`` (with ``plural="classes"``). Also the templates' ``counted``
    filter."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


@cache
def environment() -> jinja2.Environment:
    """The report's one Jinja2 environment: templates from :data:`TEMPLATES`, autoescape on
    for every template, an undefined name an error, and the :func:`counted` filter."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             extensions=[JoinLines])
    env.filters["counted"] = counted
    return env


def render(template: str, **context: Any) -> str:
    """The template ``template`` (a file name under :data:`TEMPLATES`) filled with
    ``context``."""
    return environment().get_template(template).render(**context)


def macro(template: str, name: str) -> Any:
    """The macro ``name`` of ``template``, to call from Python (it returns escaped
    HTML as ``markupsafe.Markup``)."""
    return getattr(environment().get_template(template).module, name)


def colormap_tables(name: str) -> dict[str, str]:
    """The ``feFunc`` lookup tables that turn a grey level into colormap ``name``: per
    channel ``"R"``, ``"G"``, ``"B"``, :data:`TABLE_SIZE` values in [0, 1] (the colormap at
    evenly spaced grey levels), as the ``tableValues`` attribute's text."""
    from pipeline.render.heatmaps import colormap_lut

    lut = colormap_lut(name).astype(np.float64) / 255.0
    idx = np.linspace(0, 255, TABLE_SIZE).round().astype(int)
    return {c: " ".join(f"{v:.3f}" for v in lut[idx, k]) for k, c in enumerate("RGB")}


def svg_filters(names: Any, default: str | None = None) -> str:
    """An invisible ``<svg>`` with one filter per colormap, ``id="cmap-<name>"``: a grey-level
    image through it comes out in that colormap (``feComponentTransfer`` tables).
    ``default``: also that colormap as ``id="cmap-default"`` (for pages without script).

    Parameters
    ----------
    names
        The colormaps (an iterable of matplotlib colormap names).
    default
        The colormap of ``id="cmap-default"``, or None for none.
    """
    entries = [(n, n) for n in names] + ([("default", default)] if default else [])
    filters = [(ident, colormap_tables(name)) for ident, name in entries]
    return str(macro("parts.html", "svg_filters")(filters))
