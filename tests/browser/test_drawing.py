"""Drawing a digit in a real browser and reading the model's answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, Request, expect

from tests.browser.support import draw, gateway_champion, stored
from tests.system import System

pytestmark = pytest.mark.browser


def test_a_drawn_digit_is_read_and_shown_with_the_model_that_answered(
    page: Page, system: System, api: httpx.Client, screenshots: Path
) -> None:
    page.goto("/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#submit")).to_be_disabled()

    draw(page)
    page.screenshot(path=screenshots / "drawing.png")
    with page.expect_request("**/api/predictions*") as sent:
        page.locator("#submit").click()

    result = page.locator("#result")
    expect(result).to_have_attribute("data-state", "predicted", timeout=15_000)
    expect(result).to_have_attribute("data-via", "stream")
    champion = gateway_champion(system.gateway_url)
    expect(result.locator("[data-part=model]")).to_have_attribute("data-version", str(champion))
    expect(result.locator("[data-part=model]")).to_contain_text(f"v{champion}")
    expect(result.locator("[data-part=latency]")).to_contain_text("ms")
    digit = result.locator("[data-part=digit]").inner_text()
    expect(result.locator(".bar.top")).to_have_count(1)
    expect(result.locator(".bar.top")).to_have_attribute("data-digit", digit)
    # The 28×28 image the model saw arrives once history-service has stored the drawing.
    expect(result.locator("img[data-part=input]")).to_have_js_property(
        "naturalWidth", 28, timeout=10_000
    )
    digit_id = result.get_attribute("data-digit-id")
    expect(page.locator("#history tbody tr").first).to_have_attribute(
        "data-digit-id", str(digit_id)
    )
    _check_upload(sent.value, stored(api, str(digit_id)) or {})
    page.screenshot(path=screenshots / "result.png", full_page=True)


def _check_upload(request: Request, drawing: dict[str, Any]) -> None:
    """A 280×280 PNG (whatever the screen's pixel ratio), marked as coming from the web page."""
    assert "wait" not in request.url, "the page waits on the event stream, not on the upload"
    assert request.headers.get("x-mnistream-source") == "web"
    assert (drawing["media_type"], drawing["width"], drawing["height"]) == ("image/png", 280, 280)


def test_the_pad_is_sharp_on_hidpi_screens(page: Page) -> None:
    page.goto("/")
    sizes = page.locator("#pad").evaluate(
        "c => ({backing: c.width, css: c.getBoundingClientRect().width, ratio: devicePixelRatio})"
    )
    assert sizes["ratio"] == 2
    assert abs(sizes["backing"] - sizes["css"] * 2) <= 1, sizes


def test_the_keyboard_reads_undoes_and_clears(page: Page) -> None:
    page.goto("/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    submit = page.locator("#submit")

    draw(page)
    page.keyboard.press("Escape")
    expect(submit).to_be_disabled()
    draw(page, [[(0.5, 0.2), (0.5, 0.8)]])
    page.keyboard.press("Backspace")
    expect(submit).to_be_disabled()
    expect(page.locator("#undo")).to_be_disabled()

    draw(page)
    page.keyboard.press("Enter")
    expect(page.locator("#result")).to_have_attribute("data-state", "predicted", timeout=15_000)
    expect(submit).to_be_disabled()  # the pad was cleared for the next digit


def test_an_empty_pad_cannot_be_submitted(page: Page) -> None:
    uploads: list[str] = []
    page.on("request", lambda r: uploads.append(r.url) if "/api/predictions" in r.url else None)
    page.goto("/")
    expect(page.locator("#submit")).to_be_disabled()

    page.locator("#pad").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#draw-message")).to_contain_text("Draw a digit first")
    assert uploads == []
