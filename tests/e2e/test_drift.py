"""Drift on the real stack: the champion was promoted with the reference its training measured;
MNIST-like drawings score below the threshold, a window of much thicker strokes above it, in
`mnistream drift`, in history-service's API and in its Prometheus gauges."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest
from mnistream_common.history_api import DriftOut
from mnistream_common.history_client import HistoryClient
from mnistream_system.canvas import render_canvas_png
from PIL import Image, ImageFilter

from tests.e2e.support import everything_settled, mnistream, upload_all
from tests.polling import eventually
from tests.system import System

pytestmark = pytest.mark.e2e

WINDOW = 300


def mnist_like(count: int, *, thick: bool, seed: int) -> list[bytes]:
    """Random MNIST test digits as canvas drawings; `thick`: strokes dilated by a pixel each
    side at 28×28 first (about three times as wide on the canvas)."""
    from trainer.data import load_split
    from trainer.settings import Settings as TrainerSettings

    images = load_split(TrainerSettings().mnist_root, train=False).images.numpy()
    picked = np.random.default_rng(seed).choice(len(images), count, replace=False)
    drawings = []
    for image in images[picked]:
        if thick:
            image = np.asarray(Image.fromarray(image).filter(ImageFilter.MaxFilter(3)))
        drawings.append(render_canvas_png(image))
    return drawings


async def drift_of_the_last(system: System, count: int) -> DriftOut:
    await eventually(everything_settled, 120, "the drawings stored and read")
    async with HistoryClient.at(system.history_url) as history:
        return await history.drift(count)


def table_states(output: str) -> dict[str, str]:
    """The state column of `mnistream drift`'s rows for the short window, by signal."""
    rows = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in output.splitlines()
        if line.startswith(f"│ last {WINDOW} ")
    ]
    return {row[1]: row[-1] for row in rows if len(row) == 7}


def scores(report: DriftOut, kind: str) -> dict[str, float | None]:
    window = f"last {WINDOW}"
    return {s.signal: s.score for s in report.signals if s.window == window and s.kind == kind}


async def test_thick_strokes_raise_the_drift_score_within_one_window(system: System) -> None:
    await upload_all(system.gateway_url, mnist_like(WINDOW, thick=False, seed=7))
    calm = await drift_of_the_last(system, WINDOW)
    assert calm.reference and "MNIST training digits" in calm.reference, calm
    inputs, outputs = scores(calm, "input"), scores(calm, "output")
    assert set(inputs) == {"ink", "mean", "aspect", "thickness", "slant"}, calm
    assert set(outputs) == {"confidence", "entropy", "digit"}, calm
    assert all(s is not None and s < 0.2 for s in inputs.values()), calm.signals
    assert all(s is not None and s < 0.2 for s in outputs.values()), calm.signals
    assert set(table_states(mnistream("drift", "--last", str(WINDOW)).stdout).values()) == {"ok"}

    await upload_all(system.gateway_url, mnist_like(WINDOW, thick=True, seed=8))
    shifted = await drift_of_the_last(system, WINDOW)
    thick = scores(shifted, "input")
    assert thick["thickness"] is not None and thick["thickness"] > 0.2, shifted.signals
    assert thick["ink"] is not None and thick["ink"] > 0.2, shifted.signals
    states = table_states(mnistream("drift", "--last", str(WINDOW)).stdout)
    assert states["thickness"] == "DRIFT" and states["ink"] == "DRIFT", states
    assert len(states) == 8, states

    # The default window (500: 300 thick and 200 MNIST-like) feeds the gauges.
    async with HistoryClient.at(system.history_url) as history:
        await history.drift()
    async with httpx.AsyncClient(base_url=system.history_url) as client:
        metrics = (await client.get("/metrics")).text
    alarm = re.search(
        r'mnistream_drift_alarm\{signal="thickness",window="last 500"\} (\S+)', metrics
    )
    assert alarm and float(alarm[1]) == 1.0, metrics[-3000:]
