"""The drift chart in the models panel: one bar per signal of the last drawings against the
champion's training data, the threshold marked, a drifted signal flagged."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.support import upload
from tests.helpers import FOUR, SEVEN, drawing_png
from tests.system import System

pytestmark = pytest.mark.browser

SIGNALS = ["ink", "mean", "aspect", "thickness", "slant", "confidence", "entropy", "digit"]


def test_the_models_panel_charts_drift_per_signal(
    page: Page, system: System, api: httpx.Client, screenshots: Path
) -> None:
    for figure in (FOUR, SEVEN) * 30:  # enough drawings in the window for a score
        upload(api, drawing_png(figure))
    deadline = time.monotonic() + 30
    report = api.get("/api/drift").json()
    while not any(s["drifted"] for s in report["signals"]) and time.monotonic() < deadline:
        time.sleep(1)  # until history-service has stored the drawings and their readings
        report = api.get("/api/drift").json()
    assert not report["note"], report  # the champion was promoted with its reference
    page.goto("/")
    drift = page.locator("#drift")
    bars = drift.locator(".drift-bars li")
    expect(bars).to_have_count(len(SIGNALS), timeout=20_000)
    assert [bar.get_attribute("data-signal") for bar in bars.all()] == SIGNALS
    expect(drift.locator(".drift-head")).to_have_text(
        re.compile(rf"^last \d+ drawings against v{report['champion_version']}'s training data")
    )
    # Two stroke figures drawn again and again are nothing like MNIST: some signal has drifted,
    # and its bar is flagged and reaches past the threshold line.
    drifted = drift.locator(".drift-bars li.drifted")
    assert drifted.count() >= 1
    expect(drift.locator(".drift-head")).to_contain_text("drift in ")
    track = drifted.first.locator(".drift-track").bounding_box()
    fill = drifted.first.locator(".drift-fill").bounding_box()
    assert track and fill and fill["width"] > track["width"] * 0.5
    page.locator("#models-card").screenshot(path=screenshots / "drift.png")
