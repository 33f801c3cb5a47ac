"""Debian's headless chromium driven by Selenium, for tests of the HTML pages vtg_jax writes and for the
README's screenshot of one:

    python tests/io/headless_chromium.py W/predictions/val_eval.html docs/predictions_page.png --click=sort-iou

The browser and its driver are the Debian packages (`apt-get install -y chromium chromium-driver`, which
.ci/run installs): their paths are given so that Selenium Manager downloads nothing, and the flags keep
chromium off the network (pages under test are self-contained files).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
from typing import Iterator, Sequence

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--force-device-scale-factor=1")


def missing() -> str:
    """Why the browser cannot run ("" when it can), naming the Debian packages to install."""
    absent = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    return f"{' and '.join(absent)} not found: install the Debian packages ({INSTALL})" if absent else ""


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator["object"]:
    """A Selenium WebDriver of headless chromium with a `width` x `height` viewport, quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if missing():
        raise RuntimeError(missing())
    profile = tempfile.mkdtemp(prefix="vtg_chromium_")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + (f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        # --window-size sizes the window; the page's viewport is what a screenshot shows, so size it exactly.
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def file_url(path: str) -> str:
    return "file://" + os.path.abspath(path)


def screenshot(page: str, png: str, width: int = 1280, height: int = 1400, clicks: Sequence[str] = ()) -> str:
    """PNG of the top `width` x `height` pixels of the HTML file `page`, after clicking the elements with
    the ids `clicks` in turn (e.g. a sort control)."""
    from selenium.webdriver.common.by import By

    with chromium(width, height) as driver:
        driver.get(file_url(page))
        for element_id in clicks:
            driver.find_element(By.ID, element_id).click()
        driver.save_screenshot(png)
    return png


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("page")
    parser.add_argument("png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1400)
    parser.add_argument("--click", action="append", default=[], help="id of an element to click first (repeatable)")
    args = parser.parse_args()
    print(screenshot(args.page, args.png, args.width, args.height, args.click))
