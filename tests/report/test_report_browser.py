"""The report in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``), driven by Selenium, opening the page from ``file://``.

Skipped, with the reason, where no Chromium is installed (``make browser`` installs it; CI's
``.ci/run`` does). Screenshots go to ``$XAI_SCREENSHOTS`` when set, else the test's folder.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.browser import chromium_paths, headless_chrome
from tests.workflow_helpers import run_ok

pytestmark = pytest.mark.skipif(
    chromium_paths() is None,
    reason="no headless Chromium here: install Debian's chromium and chromium-driver "
           "(`make browser`, as root) to run the report's browser tests")

XSS = "<img src=x onerror=alert(1)>.png"
#: Two ImageNet classes (tench, goldfish) as class folders: every image has a true label.
CLASSES = ("n01440764", "n01443537")


def _dataset(root: Path) -> int:
    rng = np.random.default_rng(0)
    n = 0
    for k, wnid in enumerate(CLASSES):
        (root / wnid).mkdir(parents=True)
        names = [f"img{i}.png" for i in range(4)] + ([XSS, "quote\"d 'é' 猫.png"] if k == 0
                                                    else [])
        for name in names:
            pixels = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / wnid / name, format="PNG")
            n += 1
    return n


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, int]:
    tmp = tmp_path_factory.mktemp("browser")
    n = _dataset(tmp / "images")
    config = tmp / "b.toml"
    config.write_text("\n".join([
        "[dataset]", 'layout = "class-folders"', f'root = "{tmp / "images"}"', "resize = 40",
        "crop = 32", "", "[model]", 'weights = "random"', "",
        "[run]", f'out = "{tmp / "runs"}"', 'device = "cpu"', "shard_size = 4", "seed = 0", "",
        "[methods.gradient]", "", "[methods.integrated_gradients]", "n_steps = 4", "",
        "[methods.input_x_gradient]", ""]))
    run_ok(config)
    return tmp / "runs" / "b" / "report" / "index.html", n


@pytest.fixture(scope="module")
def driver():
    drv = headless_chrome(logs=True)
    yield drv
    drv.quit()


def _open(driver, page: Path) -> float:
    """Load ``page`` from file://; return the seconds until the gallery said it is ready."""
    driver.get_log("browser")
    driver.get_log("performance")
    start = time.perf_counter()
    driver.get(page.as_uri())
    deadline = start + 20
    while time.perf_counter() < deadline:
        if driver.execute_script("return document.body && document.body.dataset.ready"):
            return time.perf_counter() - start
        time.sleep(0.02)
    raise AssertionError("the gallery never became ready")


def _cards(driver):
    return driver.find_elements("css selector", "#cards .card")


def _choose(driver, select_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", select_id)).select_by_value(value)


def test_page_loads_without_errors_or_outside_requests(driver, report) -> None:
    page, _n = report
    _open(driver, page)
    time.sleep(0.5)  # let the lazy images of the first screen load
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not errors, errors
    urls = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.add(message["params"]["request"]["url"])
    folder = page.parent.as_uri() + "/"
    assert urls, "the performance log recorded no requests"
    outside = sorted(u for u in urls if not u.startswith(folder))
    assert not outside, outside
    assert any("/img/m0/" in u for u in urls), "the heat-map tiles were loaded"


def test_one_card_per_image(driver, report) -> None:
    page, n = report
    _open(driver, page)
    assert len(_cards(driver)) == n
    assert driver.find_element("id", "count").text == f"Showing {n} of {n} images"


def test_sorting_by_probability_orders_the_cards(driver, report) -> None:
    page, _n = report
    _open(driver, page)
    _choose(driver, "sort", "prob")
    _choose(driver, "order", "desc")
    values = [float(e.get_attribute("data-value"))
              for e in driver.find_elements("css selector", "#cards .card .prob")]
    assert len(values) == len(_cards(driver)) and len(values) > 3
    assert values == sorted(values, reverse=True)
    _choose(driver, "order", "asc")
    values = [float(e.get_attribute("data-value"))
              for e in driver.find_elements("css selector", "#cards .card .prob")]
    assert values == sorted(values)


def test_a_class_filter_shows_only_that_class(driver, report) -> None:
    page, n = report
    _open(driver, page)
    _choose(driver, "class-by", "true")
    _choose(driver, "class", "1")  # goldfish
    cards = _cards(driver)
    assert len(cards) == 4
    assert all("goldfish" in c.find_element("css selector", ".verdict").text for c in cards)
    _choose(driver, "class", "")
    _choose(driver, "class-by", "pred")
    first = _cards(driver)[0].find_element("css selector", ".pred-name").text
    index = driver.execute_script(
        "return window.XAI_MANIFEST.classes.indexOf(arguments[0])", first)
    _choose(driver, "class", str(index))
    shown = {c.find_element("css selector", ".pred-name").text for c in _cards(driver)}
    assert shown == {first}
    _choose(driver, "class", "")
    assert len(_cards(driver)) == n


def test_the_xss_file_name_is_shown_as_text(driver, report) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    page, _n = report
    _open(driver, page)
    ids = [e.text for e in driver.find_elements("css selector", "#cards .card .id")]
    assert f"n01440764/{XSS}" in ids
    assert "n01440764/quote\"d 'é' 猫.png" in ids
    assert not driver.find_elements("css selector", 'img[src="x"]')
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018  (no script ran: no alert is open)


def test_colormap_and_overlay_switch(driver, report) -> None:
    page, _n = report
    _open(driver, page)
    _choose(driver, "colormap", "viridis")
    style = driver.execute_script(
        "return getComputedStyle(document.querySelector('.tile img.map')).filter")
    assert "cmap-viridis" in style
    driver.find_element("id", "overlay").click()
    assert "overlay" in driver.find_element("tag name", "body").get_attribute("class")


def test_screenshots_are_saved(driver, report, tmp_path) -> None:
    page, _n = report
    folder = Path(os.environ.get("XAI_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("index", "summary", "strategies"):
        _open(driver, page.with_name(f"{name}.html")) if name == "index" else \
            driver.get(page.with_name(f"{name}.html").as_uri())
        time.sleep(0.5)
        shot = folder / f"report-{name}.png"
        assert driver.save_screenshot(str(shot))
        with Image.open(shot) as img:
            assert img.size[0] >= 1000
            assert len(np.unique(np.asarray(img.convert("L")))) > 20, "the screenshot is not blank"


# --------------------------------------------------------------------------- an evaluated run


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Path:
    """Evidence images (with masks), three methods, three metrics, the randomisation test."""
    from tests.stages.test_report import evaluated_config

    config, run_dir = evaluated_config(tmp_path_factory.mktemp("evaluated"))
    run_ok(config)
    return run_dir / "report" / "index.html"


def _displayed(driver, selector: str) -> list[bool]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".map(function (e) { return getComputedStyle(e).display !== 'none'; })", selector)


def test_mask_outlines_show_on_every_tile_and_toggle(driver, evaluated, report) -> None:
    _open(driver, evaluated)
    box = driver.find_element("id", "outlines")
    assert box.is_selected()
    shown = _displayed(driver, "#cards .tile .pic img.outline")
    assert len(shown) == 6 * 4 and all(shown), "the image and its three maps, per card"
    loaded = driver.execute_script(
        "return Array.from(document.querySelectorAll('#cards .card:first-child img.outline'))"
        ".every(function (i) { return i.complete && i.naturalWidth > 0; })")
    assert loaded
    box.click()
    assert not any(_displayed(driver, "#cards .tile .pic img.outline"))
    box.click()
    assert all(_displayed(driver, "#cards .tile .pic img.outline"))
    _open(driver, report[0])  # no masks: no toggle, no outline
    assert not driver.find_elements("id", "outlines")
    assert not driver.find_elements("css selector", "img.outline")


def test_tile_scores_never_overflow_and_are_named_in_full(driver, evaluated) -> None:
    _open(driver, evaluated)
    geometry = driver.execute_script("""
        return Array.from(document.querySelectorAll('#cards .tiles')).map(function (row) {
          return Array.from(row.querySelectorAll('.tile')).map(function (t) {
            var r = t.getBoundingClientRect();
            var parts = Array.from(t.querySelectorAll('dl.scores dt, dl.scores dd'))
              .map(function (e) { var b = e.getBoundingClientRect();
                return {left: b.left, right: b.right, cut: e.scrollWidth > e.clientWidth,
                        title: e.title, text: e.textContent}; });
            return {left: r.left, right: r.right, parts: parts};
          });
        });""")
    scored = 0
    for row in geometry:
        for a, b in itertools.pairwise(row):
            assert a["right"] <= b["left"], "a tile ends before the next one starts"
        for tile in row:
            for part in tile["parts"]:
                scored += 1
                assert tile["left"] <= part["left"] and part["right"] <= tile["right"] + 0.5
                assert not part["cut"], part
    assert scored >= 6 * 3 * 3 * 2
    titles = {p["text"]: p["title"] for row in geometry for t in row for p in t["parts"]}
    assert titles["mass↑"] == "relevance_mass_accuracy (higher is better)"
    assert titles["del↓"] == "deletion (lower is better)"
    legend = driver.find_element("id", "legend").text
    for name in ("deletion", "relevance_mass_accuracy", "sparseness", "ground-truth mask"):
        assert name in legend


def test_the_summary_shows_the_overview_first_and_the_sanity_check(driver, evaluated,
                                                                     tmp_path) -> None:
    driver.get(evaluated.with_name("summary.html").as_uri())
    top = driver.execute_script("""
        var h = Array.from(document.querySelectorAll('h2'));
        function at(t) { var e = h.find(function (x) { return x.textContent.startsWith(t); });
                         return e ? e.getBoundingClientRect().top : null; }
        return [at('Which method'), at('Sanity check'), at('Run')];""")
    assert None not in top and top == sorted(top)
    assert driver.find_elements("css selector", "table.overview td.best")
    rows = driver.find_elements("css selector", "table.overview tr[data-method]")
    assert [r.get_attribute("data-method") for r in rows] == [
        "gradient", "integrated_gradients", "custom_gradient", "random"]
    assert len(driver.find_elements("css selector", "ul.verdicts li")) == 3
    assert driver.find_element("id", "sign-caveat").is_displayed()
    plot = driver.find_element("css selector", '#sanity img[src="plots/randomisation.png"]')
    assert driver.execute_script("return arguments[0].naturalWidth", plot) > 100
    overview = driver.find_element("css selector", "table.overview").rect
    assert overview["x"] + overview["width"] <= 1400, "the overview fits the window"
    folder = Path(os.environ.get("XAI_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("summary", "index"):
        page = evaluated.with_name(f"{name}.html")
        _open(driver, page) if name == "index" else driver.get(page.as_uri())
        time.sleep(0.5)
        assert driver.save_screenshot(str(folder / f"evaluated-{name}.png"))


def test_many_shards_draw_the_first_screen_then_load_the_rest_behind_it(driver, report,
                                                                         tmp_path) -> None:
    """200 images in 100 shards (more than the page requests at once): the first screen is
    drawn from the first shards (body[data-first]), and once every shard is in, the count,
    the class choices and a sort cover all 200 images, with the first cards kept."""
    from benchmarks.bench_report import _script_json, scale_up

    page = scale_up(report[0].parent, tmp_path / "big", images=200, shard_size=2)
    _open(driver, page)
    assert driver.execute_script("return document.body.dataset.first") == "1"
    cards = _cards(driver)
    assert [c.get_attribute("data-index") for c in cards] == [str(i) for i in range(48)]
    assert driver.find_element("id", "count").text == "Showing 48 of 200 images"
    broken = None
    for _ in range(100):  # the first card's shown images: every one found and drawn
        broken = driver.execute_script(
            "return Array.from(document.querySelectorAll('#cards .card:first-child img'))"
            ".filter(function (i) { return getComputedStyle(i).display !== 'none' &&"
            " !(i.complete && i.naturalWidth > 0); })"
            ".map(function (i) { return i.src; })")
        if not broken:
            break
        time.sleep(0.05)
    assert not broken, broken
    rows = [r for k in range(100)
            for r in _script_json(page.parent / f"data/shard-{k:06d}.js")["rows"]]
    options = driver.execute_script(
        "return Array.from(document.querySelectorAll('#class option')).map(o => o.value)")
    assert sorted(options[1:]) == sorted({str(c) for r in rows for c in (r["p"], r["t"])
                                          if c >= 0})
    _choose(driver, "sort", "id")
    _choose(driver, "order", "desc")
    top = max(rows, key=lambda r: (r["id"], -r["i"]))
    assert _cards(driver)[0].get_attribute("data-index") == str(top["i"])
    assert int(top["i"]) >= 48, "the top card comes from a shard loaded after the first screen"
