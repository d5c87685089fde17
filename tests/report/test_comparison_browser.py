"""The comparison's pages in headless Chromium (skipped without one, as the run report's
browser tests): no console errors, no request outside the folder, every image drawn, the
hostile names shown as text. Screenshots go to ``$XAI_SCREENSHOTS`` when set."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from pipeline.report.comparison_pages import NAV
from tests.browser import chromium_paths, headless_chrome
from tests.report.test_comparison_pages import XSS, hostile  # noqa: F401  (the fixture)

pytestmark = pytest.mark.skipif(
    chromium_paths() is None,
    reason="no headless Chromium here: install Debian's chromium and chromium-driver "
           "(`make browser`, as root) to run the report's browser tests")


@pytest.fixture(scope="module")
def driver():
    drv = headless_chrome(logs=True)
    yield drv
    drv.quit()


@pytest.mark.parametrize("page", [name for name, _ in NAV])
def test_each_page_loads_every_image_from_its_folder_alone(driver, hostile: Path,  # noqa: F811
                                                           page: str, tmp_path: Path) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    driver.get_log("browser")
    driver.get_log("performance")
    driver.get((hostile / page).as_uri())
    time.sleep(0.3)
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not errors, errors
    folder = hostile.as_uri() + "/"
    urls = {json.loads(e["message"])["message"]["params"]["request"]["url"]
            for e in driver.get_log("performance")
            if json.loads(e["message"])["message"]["method"] == "Network.requestWillBeSent"}
    assert urls and not sorted(u for u in urls if not u.startswith(folder))
    broken = driver.execute_script(
        "return [...document.images].filter(i => !i.complete || i.naturalWidth === 0)"
        ".map(i => i.src)")
    assert broken == []
    assert not driver.find_elements("css selector", 'img[src="x"]')
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018  (no script ran: no alert is open)
    shots = Path(os.environ.get("XAI_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(shots / f"compare_{page.removesuffix('.html')}.png"))


def test_the_hostile_id_and_class_are_shown_as_text(driver, hostile: Path) -> None:  # noqa: F811
    driver.get((hostile / "gallery.html").as_uri())
    captions = " ".join(e.text for e in driver.find_elements("css selector", ".caption b"))
    assert f"{XSS}/0.png" in captions
    driver.get((hostile / "index.html").as_uri())
    cells = [e.text for e in driver.find_elements("css selector", "table.classes td")]
    assert f"cat{XSS}" in cells
