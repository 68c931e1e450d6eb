"""Browser tests: Debian's Chromium driven by Playwright against a real `mmguard serve` on the
embedded default (SQLite, filesystem queue, worker child). scripts/test.sh installs Chromium when
/usr/bin/chromium is missing; without it (or without the playwright package) these tests skip."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.helpers import VENV_BIN, Proc, free_port, pool_children, service_env, wait_for

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
    root = tmp_path_factory.mktemp("ui-serve")
    data_dir = root / "state"
    port = free_port()
    env = service_env({"MMGUARD_HEARTBEAT_SECONDS": "0.3", "MMGUARD_PROGRESS_INTERVAL_SECONDS": "0"})
    proc = Proc([str(VENV_BIN / "mmguard"), "serve", "--port", str(port), "--data-dir", str(data_dir)],
                env, root / "serve.log", cwd=root)
    origin = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if not proc.alive():
            raise AssertionError("serve exited:\n" + proc.output()[-4000:])
        try:
            return httpx.get(f"{origin}/api/v1/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 90, 0.2, "mmguard serve")
        proc.groups.update(pool_children(proc.popen.pid))
        key = (data_dir / "local-api-key").read_text().strip()
        yield {"origin": origin, "key": key, "proc": proc, "root": root}
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
