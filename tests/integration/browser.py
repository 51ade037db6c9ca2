"""Headless Chromium from the Debian packages, driven by selenium through chromium-driver.

Missing binaries fail the tests that need them (never a skip): CI installs both.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM, CHROMEDRIVER = "chromium", "chromedriver"
# As root, and on a machine whose network is closed: no sandbox, no GPU, no calls home.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1600,1000")


class BrowserMissingError(RuntimeError):
    """Chromium or its driver is not installed (apt-get install chromium chromium-driver)."""


@contextmanager
def chromium(command_timeout_s: int = 120) -> Iterator[webdriver.Chrome]:
    """A fresh headless Chromium (its own profile directory) that logs the page's console.

    command_timeout_s bounds each call to the driver: longer than any script timeout set."""
    binary, driver = shutil.which(CHROMIUM), shutil.which(CHROMEDRIVER)
    if binary is None or driver is None:
        raise BrowserMissingError("headless browser tests need Debian's chromium and "
                                  "chromium-driver: apt-get install chromium chromium-driver")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    browser.command_executor.client_config.timeout = command_timeout_s  # type: ignore[union-attr]
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(browser: webdriver.Chrome) -> list[dict[str, Any]]:
    """The console's SEVERE entries since the last call (failed fetches, script errors)."""
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
