"""The drift report's arithmetic: which readings count, when a score or a gap is given."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

import numpy as np
import pytest
from history_service.drift import MIN_DRAWINGS, Thresholds, Window, _score_all
from history_service.metrics import HistoryMetrics
from mnistream_common.drift import reference_of
from mnistream_common.events import utc_now
from mnistream_common.history_api import DriftOut


def sure(digit: int, confidence: float) -> list[float]:
    rest = (1 - confidence) / 9
    return [confidence if d == digit else rest for d in range(10)]


def window(count: int, readings: list[SimpleNamespace], labels: dict[uuid.UUID, int]) -> Window:
    rng = np.random.default_rng(0)
    inputs = (rng.random((count, 784)) < 0.15).astype(np.uint8) * 255
    return Window("last 500", inputs, [r.digit_id for r in readings], readings, labels)


def reading(version: int, kind: str, digit: int, confidence: float) -> SimpleNamespace:
    return SimpleNamespace(
        digit_id=uuid.uuid4(),
        model_version=version,
        kind=kind,
        probabilities=sure(digit, confidence),
    )


def test_a_version_sure_of_itself_but_wrong_on_labels_raises_the_gap_alarm() -> None:
    champion = [reading(3, "live", 1, 0.95) for _ in range(100)]
    labels = {r.digit_id: 1 if n < 40 else 2 for n, r in enumerate(champion)}  # right on 40 %
    canary = [reading(4, "live", 2, 0.9) for _ in range(20)]  # too few labels for a gap
    rescored = [reading(2, "rescore", 1, 0.9) for _ in range(100)]  # not serving: left out
    data = window(120, champion + canary + rescored, labels)
    reference = reference_of(data.inputs, np.asarray([sure(1, 0.95)] * 120), "itself")
    report = _score_all(3, reference, [data], Thresholds())
    by_version = {v.version: v for v in report.versions}
    assert set(by_version) == {3, 4}
    three = by_version[3]
    assert three.readings == 100 and three.labeled == 100
    assert three.estimated_accuracy is not None and abs(three.estimated_accuracy - 0.95) < 1e-9
    assert three.measured_accuracy == 0.4 and three.drifted
    assert by_version[4].gap is None and not by_version[4].drifted
    assert any("v3 accuracy gap" in alarm for alarm in report.alarms)


def test_too_few_drawings_give_no_score_and_no_alarm() -> None:
    few = [reading(3, "live", 1, 0.95) for _ in range(MIN_DRAWINGS - 1)]
    data = window(len(few), few, {})
    reference = reference_of(
        window(200, [], {}).inputs, np.asarray([sure(5, 0.5)] * 200), "something else"
    )
    report = _score_all(3, reference, [data], Thresholds())
    assert report.signals and all(s.score is None and not s.drifted for s in report.signals)


def test_the_gauges_show_the_report_and_forget_old_labels() -> None:
    from history_service.drift import DriftMonitor

    champion = [reading(3, "live", 1, 0.95) for _ in range(100)]
    data = window(100, champion, {})
    other = reference_of(data.inputs[::-1] // 2, np.asarray([sure(7, 0.6)] * 100), "other")
    metrics = HistoryMetrics()
    monitor = DriftMonitor(None, metrics, 500, Thresholds(), 30)  # type: ignore[arg-type]
    monitor.observe(_score_all(3, other, [data], Thresholds()))
    value = metrics.registry.get_sample_value
    assert value("mnistream_drift_alarm", {"window": "last 500", "signal": "digit"}) == 1
    assert value("mnistream_accuracy_estimated", {"window": "last 500", "model_version": "3"})
    monitor.observe(_score_all(4, other, [window(100, [], {})], Thresholds()))
    assert (
        value("mnistream_accuracy_estimated", {"window": "last 500", "model_version": "3"}) is None
    )


async def test_pages_polling_the_chart_share_one_measurement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from history_service import drift

    measured: list[int] = []

    async def measure(engine: object, last: int, thresholds: Thresholds) -> DriftOut:
        measured.append(last)
        await asyncio.sleep(0.01)
        return DriftOut(
            champion_version=3, reference="r", computed_at=utc_now(), signals=[], versions=[]
        )

    monkeypatch.setattr(drift, "measure", measure)
    monitor = drift.DriftMonitor(None, HistoryMetrics(), 500, Thresholds(), 30)  # type: ignore[arg-type]
    first = await asyncio.gather(*(monitor.report(500) for _ in range(20)))
    assert measured == [500] and all(r is first[0] for r in first)
    await monitor.report(300)
    assert measured == [500, 300]  # another window is measured on its own
    await monitor.report(500, fresh_s=0.0)  # the periodic round always measures
    assert measured == [500, 300, 500]
