"""Browser tests: Debian's Chromium driven by Playwright against a real `mmguard serve` on the
embedded default (SQLite, filesystem queue, worker child). scripts/test.sh installs Chromium when
/usr/bin/chromium is missing; without it (or without the playwright package) these tests skip."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.helpers import (
    start_embedded,
)

CHROMIUM = os.environ.get("MMGUARD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

# In CI (CI=true) a missing browser is a failed install step, not a reason to skip.
if os.environ.get("CI"):
    import playwright.sync_api  # noqa: F401

    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: scripts/test.sh should have installed chromium"
pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does)", allow_module_level=True)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """`mmguard serve --data-dir D` with nothing else configured, as an owner would start it."""
    proc, info = start_embedded(tmp_path_factory.mktemp("ui-serve"))
    try:
        yield info
        proc.popen.send_signal(signal.SIGTERM)
        proc.popen.wait(40)
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, server: dict):  # noqa: ANN001, ANN201
    """A fresh browser context (no cookies) on the server; fails the test on any page script error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True,
                                  base_url=server["origin"])
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, errors
