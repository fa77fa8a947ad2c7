"""Browser fixtures: headless Chromium (Debian's package) against a running mnistream.

The services run as a `System` on their own ports (base 18500), beside the end-to-end tests'
system, on the test stack. A champion is made sure of once per session. Chromium or the
stack missing fails the tests with what to do; nothing is skipped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    ViewportSize,
    sync_playwright,
)

from tests.browser.support import (
    SCREENSHOTS,
    gateway_champion,
    promote,
    train_version,
)
from tests.stack import tracing_env
from tests.system import System, system_for_tests

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
# Headless and quiet: no first-run UI, no background traffic to Google, no QUIC (no UDP
# needed), no GPU (none in CI).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BASE_PORT = 18500
DESKTOP: ViewportSize = {"width": 1280, "height": 900}


@pytest.fixture(scope="package")
def system(stack: None) -> Iterator[System]:
    """gateway, history-service, an inference worker and a rescore worker; a champion serves."""
    running = system_for_tests(
        base_port=BASE_PORT, inference_workers=1, rescore_workers=1, **tracing_env()
    )
    running.start()
    try:
        if gateway_champion(running.gateway_url, settle_s=10.0) is None:
            # An empty ledger (a fresh test stack): train a small first model and promote it.
            promote(train_version(hidden=16, seed=1), reason="browser tests: first model")
        running.inference_ready(timeout=120.0)
        yield running
    finally:
        running.stop()


# Package scope, not session: the sync driver runs its own event loop in this thread while it
# lives, so any later test that runs asyncio (pytest-asyncio, asyncio.run) would fail beside it.
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    """Playwright's driver (it launches the browser; it downloads nothing)."""
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Headless Chromium from /usr/bin/chromium (override with $CHROMIUM)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}; install it with `make browser` "
            "(apt-get install -y chromium) or point $CHROMIUM at a Chromium binary"
        )
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the main states are saved as test artifacts (git-ignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def _page_of(context: BrowserContext) -> Iterator[Page]:
    """A page of `context`; closes it afterwards and fails on uncaught errors in the page."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"the page threw: {errors}"


@pytest.fixture
def page(browser: Browser, system: System) -> Iterator[Page]:
    """A desktop page on a HiDPI screen (devicePixelRatio 2); fails on uncaught page errors."""
    context = browser.new_context(
        base_url=system.gateway_url, viewport=DESKTOP, device_scale_factor=2
    )
    yield from _page_of(context)


@pytest.fixture
def phone(browser: Browser, system: System) -> Iterator[Page]:
    """A phone: 390×844 CSS px, devicePixelRatio 3, touch."""
    context = browser.new_context(
        base_url=system.gateway_url,
        viewport={"width": 390, "height": 844},
        device_scale_factor=3,
        is_mobile=True,
        has_touch=True,
    )
    yield from _page_of(context)


@pytest.fixture
def api(system: System) -> Iterator[httpx.Client]:
    """The gateway's HTTP API, for setting up and checking what the page shows."""
    with httpx.Client(base_url=system.gateway_url, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="package")
def fresh_version(system: System) -> int:
    """A newly trained version nobody has promoted yet (its seed makes its weights new)."""
    return train_version(hidden=32, seed=int(time.time()) % 100_000)
