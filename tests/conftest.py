"""Fixtures every test folder may use: a real headless Chromium (the report's and dashboards' browser tests)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _chrome() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="fedge-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.fedge_profile = profile
    return driver


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A real headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by Selenium."""
    driver = _chrome()
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(driver.fedge_profile, ignore_errors=True)
