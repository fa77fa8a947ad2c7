"""At phone width the page fits the screen, a finger draws on the pad and the answer shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.support import ONE, no_horizontal_scroll, settled_top, touch_draw

pytestmark = pytest.mark.browser


def test_a_phone_draws_with_a_finger_and_nothing_scrolls_sideways(
    phone: Page, screenshots: Path
) -> None:
    phone.goto("/")
    expect(phone.locator("#connection")).to_have_attribute("data-state", "live")
    expect(phone.locator("#history tbody tr").first).to_be_visible()
    assert no_horizontal_scroll(phone)
    pad = phone.locator("#pad").bounding_box()
    assert pad is not None
    assert pad["x"] >= 0 and pad["x"] + pad["width"] <= 390
    assert pad["width"] >= 250, f"the pad is too small to draw on: {pad}"

    touch_draw(phone, ONE)
    expect(phone.locator("#submit")).to_be_enabled()
    phone.locator("#submit").tap()

    expect(phone.locator("#result")).to_have_attribute("data-state", "predicted", timeout=15_000)
    # The answer sits under the pad on a phone; the page brings it into view once it arrives
    # (it used to stay put: the panel's top showed, the digit read was at y = 873 of 844).
    viewport = phone.viewport_size
    assert viewport is not None
    height = viewport["height"]
    top = settled_top(phone, "#result")
    assert 0 <= top < height, f"the answer is out of view: #result's top is at y = {top:.0f}"
    digit = phone.locator("#result [data-part=digit]").bounding_box()
    assert digit is not None
    assert 0 <= digit["y"] <= height - digit["height"], f"the digit read is out of view: {digit}"
    assert no_horizontal_scroll(phone)
    phone.screenshot(path=screenshots / "phone.png")
    phone.screenshot(path=screenshots / "phone-full.png", full_page=True)
