"""A rollout started from the CLI shows up in the models panel without a reload: the split,
the figures of both versions as drawings arrive, the verdict, and its end."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.support import train_version, upload
from tests.e2e.support import mnistream
from tests.helpers import FOUR, SEVEN, drawing_png
from tests.system import System

pytestmark = pytest.mark.browser


def test_the_models_panel_shows_the_running_canary_and_its_live_figures(
    page: Page, system: System, api: httpx.Client, screenshots: Path
) -> None:
    candidate = train_version(hidden=24, seed=int(time.time()) % 100_000 + 7)
    env = {"HISTORY_URL": system.history_url, "GATEWAY_URL": system.gateway_url}
    page.goto("/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    rollout = page.locator("#rollout")
    expect(rollout).to_be_hidden()
    page.evaluate("window.notReloaded = true")

    mnistream(
        "canary", str(candidate), "--percent", "50", "--force", "--reason", "browser", env=env
    )
    try:
        expect(rollout).to_be_visible(timeout=15_000)
        expect(rollout).to_have_attribute("data-mode", "canary")
        expect(rollout.locator("[data-part=split]")).to_contain_text(
            f"v{candidate} answers 50 % of drawings"
        )
        expect(rollout.locator("[data-part=verdict]")).to_have_text(
            re.compile(r"^Not enough labelled drawings yet")
        )
        for figure in (FOUR, SEVEN) * 5:
            upload(api, drawing_png(figure))
        reads = rollout.locator("tbody td:nth-child(2)")

        def total_read() -> int:
            return sum(int(text) for text in reads.all_inner_texts())

        deadline = time.monotonic() + 30
        while total_read() < 10 and time.monotonic() < deadline:
            page.wait_for_timeout(500)
        assert total_read() == 10, rollout.inner_text()
        assert rollout.locator("[data-part=failed]").all_inner_texts() == ["0", "0"]
        expect(
            rollout.locator(f"tr[data-role=candidate][data-version='{candidate}']")
        ).to_be_visible()
        page.locator("#models-card").screenshot(path=screenshots / "rollout-canary.png")
    finally:
        mnistream("abort", "--reason", "browser: end of test", env=env)
    expect(rollout).to_be_hidden(timeout=15_000)
    assert page.evaluate("window.notReloaded") is True
