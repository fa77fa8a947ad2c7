"""Helpers for the browser tests: drawing with a mouse or a finger, models, waiting."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
from playwright.sync_api import Page

from tests.polling import eventually_sync

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"

Figure = Sequence[Sequence[tuple[float, float]]]
# Polylines in a 0..1 square over the pad (x right, y down).
SEVEN: Figure = (((0.25, 0.2), (0.75, 0.2), (0.45, 0.85)), ((0.35, 0.52), (0.62, 0.52)))
ONE: Figure = (((0.45, 0.3), (0.55, 0.15), (0.55, 0.85)),)


def pad_point(page: Page, x: float, y: float) -> tuple[float, float]:
    """A point of the pad (0..1 each way) in viewport coordinates, the pad scrolled into view."""
    pad = page.locator("#pad")
    pad.scroll_into_view_if_needed()
    box = pad.bounding_box()
    assert box is not None, "the drawing pad is not on screen"
    return box["x"] + x * box["width"], box["y"] + y * box["height"]


def draw(page: Page, figure: Figure = SEVEN) -> None:
    """Draw `figure` on the pad with mouse moves, one press per stroke."""
    for stroke in figure:
        page.mouse.move(*pad_point(page, *stroke[0]))
        page.mouse.down()
        for point in stroke[1:]:
            page.mouse.move(*pad_point(page, *point), steps=12)
        page.mouse.up()


def touch_draw(page: Page, figure: Figure = ONE) -> None:
    """Draw `figure` with a finger: real touch input through the DevTools protocol."""
    session = page.context.new_cdp_session(page)
    clock = [time.time()]

    def touch(kind: str, points: list[dict[str, float]]) -> None:
        # Timestamps 16 ms apart, as a 60 Hz screen reports them: without them every event
        # is "now", the finger seems infinitely fast, and Chrome sees a fling.
        clock[0] += 0.016
        session.send(
            "Input.dispatchTouchEvent",
            {"type": kind, "touchPoints": points, "timestamp": clock[0]},
        )

    for stroke in figure:
        x, y = pad_point(page, *stroke[0])
        touch("touchStart", [{"x": x, "y": y}])
        for (x0, y0), (x1, y1) in itertools.pairwise(stroke):
            for step in range(1, 13):
                t = step / 12
                x, y = pad_point(page, x0 + (x1 - x0) * t, y0 + (y1 - y0) * t)
                touch("touchMove", [{"x": x, "y": y}])
        # The finger rests before it lifts; lifting mid-swipe would be a fling, and Chrome
        # swallows the next tap to stop a fling, as phones do.
        for _ in range(15):
            touch("touchMove", [{"x": x, "y": y}])
        touch("touchEnd", [])
    session.detach()


def gateway_champion(gateway_url: str, *, settle_s: float = 0.0) -> int | None:
    """The version the gateway serves, allowing it `settle_s` to read the promotion ledger."""
    deadline = time.monotonic() + settle_s
    while True:
        model = httpx.get(f"{gateway_url}/readyz", timeout=5.0).json().get("model")
        if model:
            return int(model["version"])
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.3)


def off_the_loop(work: Callable[[], T]) -> T:
    """Run `work` in a thread: Playwright's sync API keeps an event loop running in this one,
    and the trainer and the CLI call asyncio.run()."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(work).result()


def train_version(*, hidden: int, seed: int) -> int:
    """Train a small MLP on an MNIST subset (seconds) and register it; its version."""
    from trainer.config import TrainConfig
    from trainer.pipeline import train_and_register
    from trainer.settings import Settings

    config = TrainConfig(
        arch="mlp", hidden=hidden, limit_train=3000, epochs=1, augment=False, workers=0, seed=seed
    )
    return off_the_loop(lambda: train_and_register(config, Settings()).version)


def promote(version: int, *, reason: str, previous: int | None = None) -> None:
    """Promote through the CLI's own code path: the `champion` alias and `model.promoted`."""
    from mnistream_cli.promotion import Promoter
    from mnistream_cli.settings import Settings

    def run() -> None:
        promoter = Promoter(Settings())
        candidate = promoter.registry.get(version)
        asyncio.run(promoter.promote(candidate, previous=previous, reason=reason))

    off_the_loop(run)


def upload(api: httpx.Client, png: bytes, *, wait_ms: int = 3000) -> str:
    """Upload a drawing as another client would; its digit id once it is predicted."""
    response = api.post(
        "/api/predictions", params={"wait": wait_ms}, files={"image": ("d.png", png, "image/png")}
    )
    assert response.status_code in (200, 202), response.text
    digit_id: str = response.json()["digit_id"]
    return digit_id


def stored(api: httpx.Client, digit_id: str) -> dict[str, Any] | None:
    """The drawing as history-service has it, or None while it is not stored yet."""
    response = api.get(f"/api/digits/{digit_id}")
    if response.status_code == 404:
        return None
    response.raise_for_status()
    drawing: dict[str, Any] = response.json()
    return drawing


def wait_for_label(api: httpx.Client, digit_id: str, label: int, *, timeout: float = 30.0) -> None:
    """Until history-service stores `label` for the drawing."""
    eventually_sync(
        lambda: (stored(api, digit_id) or {}).get("label") == label,
        timeout,
        f"history never stored label {label} for {digit_id}",
        interval=0.2,
    )


def no_horizontal_scroll(page: Page) -> bool:
    """Whether the page fits its viewport's width."""
    fits: bool = page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    return fits


def settled_top(page: Page, selector: str, *, timeout: float = 5.0) -> float:
    """The top of `selector` in viewport px once the page stops scrolling (a smooth scroll takes
    a few hundred ms)."""
    seen: list[float] = []

    def still() -> bool:
        box = page.locator(selector).bounding_box()
        assert box is not None, f"{selector} is not rendered"
        seen.append(box["y"])
        return len(seen) > 1 and seen[-1] == seen[-2]

    eventually_sync(still, timeout, f"the page kept scrolling {selector}", interval=0.1)
    return seen[-1]
