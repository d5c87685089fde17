"""Headless Chromium through Selenium, for the report's browser tests and its benchmark.

Debian's ``chromium`` and ``chromium-driver`` (``make browser``) are used; ``XAI_CHROMIUM``
and ``XAI_CHROMEDRIVER`` point at others. Playwright's browser downloads are not needed.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

#: Window size and the flags a container needs (no sandbox, no /dev/shm, no GPU).
CHROME_ARGS: tuple[str, ...] = ("--headless=new", "--no-sandbox", "--disable-gpu",
                                "--disable-dev-shm-usage", "--window-size=1400,1000")


def chromium_paths() -> tuple[str, str] | None:
    """``(chromium, chromedriver)`` executables, or None where either is missing."""
    chromium = os.environ.get("XAI_CHROMIUM") or shutil.which("chromium") \
        or shutil.which("chromium-browser")
    driver = os.environ.get("XAI_CHROMEDRIVER") or shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def headless_chrome(*, logs: bool = False, page_load: str = "normal") -> Any:
    """A fresh headless Chromium WebDriver; with ``logs`` it records the console and the
    network (``driver.get_log("browser")``, ``"performance"``). ``page_load`` is WebDriver's
    page load strategy (``"none"``: ``get`` returns at once, for timing what the page shows
    before its load event). The caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = chromium_paths()
    if paths is None:
        raise RuntimeError("Expected `chromium` and `chromedriver` on PATH, got at least one "
                           "missing: run `make browser` (as root; Debian's chromium and "
                           "chromium-driver) or set XAI_CHROMIUM and XAI_CHROMEDRIVER.")
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    options.page_load_strategy = page_load
    if logs:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(paths[1]), options=options)
