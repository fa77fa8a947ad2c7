"""The history table: newest first, paged as it scrolls, live, and labelled by the user."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.support import draw, upload, wait_for_label
from tests.helpers import FOUR, drawing_png

pytestmark = pytest.mark.browser


def test_a_label_click_persists_across_a_reload(page: Page, api: httpx.Client) -> None:
    page.goto("/")
    draw(page)
    page.locator("#submit").click()
    result = page.locator("#result")
    expect(result).to_have_attribute("data-state", "predicted", timeout=15_000)
    digit_id = result.get_attribute("data-digit-id")
    assert digit_id
    row = page.locator(f"#history tr[data-digit-id='{digit_id}']")

    row.locator("button[data-label='7']").click()
    expect(row.locator("button[data-label='7']")).to_have_attribute("aria-pressed", "true")
    wait_for_label(api, digit_id, 7)

    page.reload()
    row = page.locator(f"#history tr[data-digit-id='{digit_id}']")
    expect(row.locator("button[data-label='7']")).to_have_attribute("aria-pressed", "true")
    expect(row.locator("button[aria-pressed='true']")).to_have_count(1)


def test_a_digit_key_labels_the_focused_row(page: Page, api: httpx.Client) -> None:
    digit_id = upload(api, drawing_png(FOUR))
    page.goto("/")
    row = page.locator(f"#history tr[data-digit-id='{digit_id}']")

    row.focus()
    page.keyboard.press("4")

    expect(row.locator("button[data-label='4']")).to_have_attribute("aria-pressed", "true")
    wait_for_label(api, digit_id, 4)
    page.reload()
    expect(
        page.locator(f"#history tr[data-digit-id='{digit_id}'] button[data-label='4']")
    ).to_have_attribute("aria-pressed", "true")


def test_drawings_from_other_clients_appear_at_the_top_without_a_reload(
    page: Page, api: httpx.Client
) -> None:
    page.goto("/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    page.evaluate("window.notReloaded = true")

    digit_id = upload(api, drawing_png(FOUR))

    first = page.locator("#history tbody tr").first
    expect(first).to_have_attribute("data-digit-id", digit_id, timeout=15_000)
    expect(first.locator("td.pred.champion[data-digit]")).to_have_count(1)
    assert page.evaluate("window.notReloaded") is True


def test_the_history_is_newest_first_and_pages_as_it_scrolls(page: Page, api: httpx.Client) -> None:
    png = drawing_png(FOUR)
    for _ in range(45):  # more than two pages of 20, whatever the stack held before
        upload(api, png)  # predicted before the page opens: no live row lands during the test
    page.goto("/")
    rows = page.locator("#history tbody tr")
    expect(rows).to_have_count(20)  # one page: the table's end is far below the fold

    page.locator("#history-sentinel").scroll_into_view_if_needed()
    expect(rows).to_have_count(40)

    ids = rows.evaluate_all("rows => rows.map(r => r.dataset.digitId)")
    assert ids == sorted(ids, reverse=True), "rows are not newest first"
    expect(rows.first.locator("img.thumb")).to_have_js_property("naturalWidth", 280)
