"""When things go wrong the page says so plainly, recovers on its own, and keeps working."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, Route, expect

from tests.browser.support import draw
from tests.helpers import blank_png
from tests.system import System

pytestmark = pytest.mark.browser


def _replace_upload(body: bytes) -> Callable[[Route], None]:
    """A route handler sending `body` as the upload instead of the drawing (a raw PNG body)."""

    def handle(route: Route) -> None:
        headers = {**route.request.headers, "content-type": "image/png"}
        route.continue_(headers=headers, post_data=body)

    return handle


@pytest.mark.parametrize(
    ("case", "body", "detail"),
    [
        ("blank", blank_png(), "the drawing is blank: no ink was found; draw a digit first"),
        ("too-large", b"\x89PNG\r\n\x1a\n" + bytes(600 * 1024), "the limit is 512 KB"),
    ],
    ids=["blank", "too-large"],
)
def test_a_refused_upload_shows_the_servers_message(
    page: Page, screenshots: Path, case: str, body: bytes, detail: str
) -> None:
    page.goto("/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    # The gateway itself refuses: the route only swaps the bytes the page sends.
    page.route("**/api/predictions*", _replace_upload(body))

    draw(page)
    page.locator("#submit").click()

    message = page.locator("#draw-message")
    expect(message).to_be_visible()
    expect(message).to_contain_text("Upload refused")
    expect(message).to_contain_text(detail)
    expect(page.locator("#result")).to_have_attribute("data-state", "error")
    expect(page.locator("#submit")).to_be_enabled()  # the drawing is kept to try again
    page.screenshot(path=screenshots / f"refused-{case}.png")


def test_a_refused_label_is_rolled_back_with_the_reason(page: Page) -> None:
    page.goto("/")
    draw(page)
    page.locator("#submit").click()
    expect(page.locator("#result")).to_have_attribute("data-state", "predicted", timeout=15_000)
    row = page.locator("#history tbody tr").first
    page.route(
        "**/api/digits/*/label",
        lambda route: route.fulfill(
            status=503,
            content_type="application/json",
            body=json.dumps({"detail": "Kafka is unavailable, so nothing was accepted"}),
        ),
    )

    row.locator("button[data-label='4']").click()

    expect(row.locator(".label-note")).to_contain_text("Kafka is unavailable")
    expect(row.locator("button[data-label='4']")).to_have_attribute("aria-pressed", "false")


def test_the_page_survives_the_gateway_going_away(
    page: Page, system: System, screenshots: Path
) -> None:
    page.goto("/")
    connection = page.locator("#connection")
    expect(connection).to_have_attribute("data-state", "live")

    system.services["gateway"].kill()
    try:
        expect(connection).to_have_attribute("data-state", "reconnecting", timeout=15_000)
        expect(page.locator("#banner")).to_be_visible()
        draw(page)
        page.locator("#submit").click()
        expect(page.locator("#draw-message")).to_contain_text("gateway is unreachable")
        page.screenshot(path=screenshots / "gateway-down.png")
    finally:
        system.restart("gateway")

    expect(connection).to_have_attribute("data-state", "live", timeout=30_000)
    expect(page.locator("#banner")).to_be_hidden()
    expect(page.locator("#history tbody tr").first).to_be_visible()  # caught up on its own
    page.locator("#submit").click()  # the same drawing, now that the gateway is back
    expect(page.locator("#result")).to_have_attribute("data-state", "predicted", timeout=15_000)
