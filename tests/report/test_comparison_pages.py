"""The comparison's pages: escaped, under the report's policy, linked from the run report.

Built from made-up runs whose image ids, class names and config values are hostile HTML."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.report.comparison_pages import NAV, colour_png
from tests.comparison.fake_runs import blob_maps, fake_run
from workflows.commands.compare_runs import CompareSettings, compare

XSS = "<img src=x onerror=alert(1)>"
N = 24


class _Quiet:
    def stage_start(self, *args: object) -> None: ...
    def advance(self, *args: object) -> None: ...
    def stage_end(self, *args: object) -> None: ...


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A comparison of two made-up runs with a script in an id, a class name and a config
    value; returns its report folder."""
    root = tmp_path_factory.mktemp("hostile")
    pred = np.arange(N) % 3
    ids = [f"{XSS}/{i}.png" if i == 0 else f"img/{i}.png" for i in range(N)]
    classes = [f"cat{XSS}", "dog\"'", "bird&amp;"]
    strategy = np.zeros((1, N), int)
    a = fake_run(root / "a", blob_maps(N), pred, ids=ids, classes=classes, strategy=strategy,
                 config={"model": {"weights": f"{XSS}.pth"}})
    b = fake_run(root / "b", blob_maps(N, seed=1, corner=pred == 0), pred, ids=ids,
                 classes=classes, strategy=strategy,
                 config={"model": {"weights": "</td><script>alert(1)</script>"}})
    compare(a, b, root / "cmp", CompareSettings(permutations=99), _Quiet())
    return root / "cmp" / "report"


def _pages(folder: Path) -> dict[str, str]:
    return {name: (folder / name).read_text() for name, _ in NAV}


def test_every_page_carries_the_policy_and_no_inline_script_or_style(hostile: Path) -> None:
    for name, html in _pages(hostile).items():
        assert "default-src 'none'; script-src 'self' file:" in html, name
        assert "<script" not in html, name  # no page script at all, and none injected
        assert "style=" not in html and "<style" not in html, name
        assert 'href="assets/compare.css"' in html and 'href="assets/report.css"' in html
    assert (hostile / "assets" / "compare.css").is_file()


def test_hostile_ids_classes_and_config_values_are_escaped(hostile: Path) -> None:
    pages = _pages(hostile)
    text = "".join(pages.values())
    assert XSS not in text and "<img src=x" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages["gallery.html"]
    assert "cat&lt;img src=x onerror=alert(1)&gt;" in pages["index.html"]
    assert "&lt;/td&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in pages["index.html"]
    assert "bird&amp;amp;" in pages["index.html"]


def test_every_image_a_page_names_is_in_the_folder(hostile: Path) -> None:
    for name, html in _pages(hostile).items():
        for src in re.findall(r'<img[^>]* src="([^"]+)"', html):
            assert (hostile / src).is_file(), (name, src)


def test_the_navigation_marks_the_current_page(hostile: Path) -> None:
    for name, html in _pages(hostile).items():
        assert f'<a href="{name}" class=current>' in html


def test_colour_png_spans_the_colormap() -> None:
    from io import BytesIO

    from PIL import Image

    img = np.asarray(Image.open(BytesIO(colour_png(np.array([[0.0, 1.0]]), "gray", 0, 1))))
    assert img[0, 0].tolist() == [0, 0, 0] and img[0, 1].tolist() == [255, 255, 255]


def test_the_run_report_links_the_comparisons_made_from_it(hostile: Path) -> None:
    from workflows.stages.report import comparison_links

    run = hostile.parent.parent / "a"
    assert json.loads((run / "comparisons.json").read_text())[0]["as"] == "A"
    links = comparison_links(run)
    assert links == [("../../cmp/report/index.html", "this run as A, against b")]
    assert comparison_links(hostile.parent.parent / "nowhere") == []
