"""The report's templates: joined lines, escaping, the colormap filters."""

from __future__ import annotations

import re

import pytest

from pipeline.report.templating import (
    TABLE_SIZE,
    counted,
    environment,
    join_lines,
    macro,
    render,
    svg_filters,
)


def test_colormap_filter_tables_are_the_colormap() -> None:
    from pipeline.render.heatmaps import colormap_lut

    svg = svg_filters(["viridis"], default="gray")
    lut = colormap_lut("viridis") / 255.0
    red = re.search(r'id="cmap-viridis".*?<feFuncR type="table" tableValues="([^"]+)"', svg)
    assert red is not None
    values = [float(v) for v in red.group(1).split()]
    assert len(values) == TABLE_SIZE
    assert values[0] == pytest.approx(lut[0, 0], abs=1e-3)
    assert values[-1] == pytest.approx(lut[255, 0], abs=1e-3)
    assert 'id="cmap-default"' in svg


def test_lines_join_with_nothing_next_to_markup_and_a_space_inside_prose() -> None:
    source = """
        <p>
          Two lines of
          prose, {{ x }}
          and more.</p>
        {% if y %}
          {{ part() }}
          text
        {% endif %}

        <b>a</b>
    """
    assert join_lines(source) == ("<p>Two lines of prose, {{ x }} and more.</p>"
                                  "{% if y %}{{ part() }}text{% endif %}<b>a</b>")


def test_every_template_value_is_escaped() -> None:
    cells = str(macro("parts.html", "table")([["<script>x</script>", "a & b"]], ["<h>"]))
    assert cells == ("<table><tr><th>&lt;h&gt;</th></tr><tr><td>&lt;script&gt;x&lt;/script&gt;"
                     "</td><td>a &amp; b</td></tr></table>")
    page = render("gallery.html", title="<img src=x onerror=alert(1)>", current="index.html",
                  filters=[])
    assert "<img src=x" not in page and page.count("&lt;img src=x onerror=alert(1)&gt;") == 2


def test_counts_take_the_plural_unless_they_are_one() -> None:
    assert [counted(n, "image") for n in (0, 1, 2)] == ["0 images", "1 image", "2 images"]
    assert counted(1, "class", "classes") == "1 class"
    assert counted(3, "class", "classes") == "3 classes"
    template = environment().from_string('{{ n|counted("map") }}')
    assert [template.render(n=n) for n in (1, 4)] == ["1 map", "4 maps"]
