"""Fixtures of the page's browser tests: the real service (`python -m service`) over the factory
bundle, and Debian's Chromium driven by Playwright (never a browser Playwright downloads).

The tests skip, saying why, only when /usr/bin/chromium is missing or cannot be launched
(`scripts/ensure_chromium.sh` installs it).
"""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Error, Page, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))  # the service tests' helpers

from bundle_factory import FactoryBundle, build_bundle  # noqa: E402
from served import Served, served  # noqa: E402
from ui_testing import API_KEY  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: run scripts/ensure_chromium.sh (apt-get install chromium)")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox"])
        except Error as exc:
            pytest.skip(f"{CHROMIUM} cannot be launched: {exc.message.splitlines()[0]}")
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def ui_bundle(tmp_path_factory: pytest.TempPathFactory) -> FactoryBundle:
    return build_bundle(tmp_path_factory.mktemp("ui") / "bundle")


@pytest.fixture(scope="session")
def service(ui_bundle: FactoryBundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for the session; tests that ingest use their own item ids."""
    with served(ui_bundle.path, tmp_path_factory.mktemp("ui-data") / "data", env={"CLIPER_API_KEY": API_KEY}) as server:
        yield server


@pytest.fixture
def page(browser: Browser, service: Served) -> Iterator[Page]:
    """/ui in a fresh browser context, loaded (bundle and user list read); a JavaScript error on
    the page, or a request to another host than the service, fails the test."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    elsewhere: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("request", lambda request: None if request.url.startswith((service.base, "data:"))
              else elsewhere.append(request.url))
    opened.goto(f"{service.base}/ui")
    opened.wait_for_selector("body[data-ready]:not([data-busy])")
    yield opened
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
    assert not elsewhere, f"the page asked another host: {elsewhere}"
