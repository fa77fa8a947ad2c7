"""A promotion from the CLI shows up live: new champion, rescore progress, new answers."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.support import ONE, draw, gateway_champion, promote, stored, upload
from tests.helpers import FOUR, drawing_png
from tests.polling import eventually_sync
from tests.system import System

pytestmark = pytest.mark.browser

RESCORE_TIMEOUT_MS = 120_000
A_DIGIT = re.compile(r"^[0-9]$")
CHAMPION_CELL = re.compile(r"\bchampion\b")


def test_a_promotion_fills_the_new_versions_column_without_a_reload(
    page: Page, system: System, api: httpx.Client, fresh_version: int, screenshots: Path
) -> None:
    previous = gateway_champion(system.gateway_url)
    for _ in range(3):
        upload(api, drawing_png(FOUR))
    page.goto("/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    draw(page, ONE)
    page.locator("#submit").click()
    expect(page.locator("#result")).to_have_attribute("data-state", "predicted", timeout=15_000)
    rows = page.locator("#history tbody tr")
    newest: list[str] = rows.evaluate_all("rows => rows.slice(0, 4).map(r => r.dataset.digitId)")
    # The rescore re-reads what is stored when it is planned; a drawing still on its way to
    # the history keeps the old champion's answer only, as designed.
    eventually_sync(
        lambda: all(stored(api, digit_id) for digit_id in newest),
        30,
        "the newest drawings never reached the history",
    )
    page.evaluate("window.notReloaded = true")

    promote(fresh_version, previous=previous, reason="browser test: a better model")

    version = str(fresh_version)
    head = page.locator(f"#history thead th[data-version='{version}']")
    expect(head).to_have_class("version-col champion", timeout=15_000)
    expect(page.locator(".champion-version")).to_have_text(f"v{version}", timeout=15_000)
    # The newest drawings are re-read last; their cells fill in as the rescore gets there.
    for digit_id in newest:
        cell = page.locator(
            f"#history tr[data-digit-id='{digit_id}'] td.pred[data-version='{version}']"
        )
        expect(cell).to_have_attribute("data-digit", A_DIGIT, timeout=RESCORE_TIMEOUT_MS)
        expect(cell).to_have_class(CHAMPION_CELL)
    job = page.locator(f".job[data-version='{version}'][data-kind='rescore']")
    try:
        expect(job).to_have_attribute("data-state", "finished", timeout=RESCORE_TIMEOUT_MS)
    except AssertionError as exc:
        page.screenshot(path=screenshots / "promotion-unfinished.png")
        status = job.locator("label").inner_text()
        raise AssertionError(f"the rescore did not finish; the page says {status!r}") from exc
    assert job.locator("progress").evaluate("p => p.value === p.max && p.max > 0")
    assert page.evaluate("window.notReloaded") is True
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=screenshots / "promotion.png")
    page.screenshot(path=screenshots / "promotion-full.png", full_page=True)

    # New drawings are read by the new champion.
    draw(page)
    page.locator("#submit").click()
    expect(page.locator("#result [data-part=model]")).to_have_attribute(
        "data-version", version, timeout=15_000
    )
