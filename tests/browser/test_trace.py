"""The answer to a drawing links to its trace, where a trace UI runs (here: Jaeger's API)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.support import draw
from tests.stack import require_jaeger

pytestmark = pytest.mark.browser


def test_the_answer_shows_its_trace_as_a_link(page: Page, screenshots: Path) -> None:
    jaeger = require_jaeger()
    page.goto("/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    trace = page.locator("#result [data-part=traceRow]")
    draw(page)
    page.locator("#submit").click()
    expect(page.locator("#result")).to_have_attribute("data-state", "predicted", timeout=15_000)
    expect(trace).to_be_visible()
    link = trace.locator("a")
    shape = re.compile(re.escape(jaeger) + r"/api/traces/[0-9a-f]{32}$")
    expect(link).to_have_attribute("href", shape)
    trace_id = link.inner_text()
    assert link.get_attribute("href", timeout=1000) == f"{jaeger}/api/traces/{trace_id}"
    page.screenshot(path=screenshots / "trace-link.png", full_page=True)

    # The link leads to the upload's trace: the gateway's span and the worker's.
    services: set[str] = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not {"gateway", "inference-worker"} <= services:
        answer = httpx.get(f"{jaeger}/api/traces/{trace_id}", timeout=5)
        if answer.is_success:
            processes = answer.json()["data"][0]["processes"].values()
            services = {p["serviceName"] for p in processes}
        time.sleep(0.5)
    assert {"gateway", "inference-worker"} <= services, services

    # A new drawing hides the old answer's trace until its own answer comes.
    draw(page)
    page.locator("#submit").click()
    expect(page.locator("#result")).to_have_attribute("data-state", "predicted", timeout=15_000)
    expect(link).not_to_have_text(trace_id)
