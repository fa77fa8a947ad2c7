"""Drift of live drawings against the champion's reference (`mnistream_common.drift`).

Two windows, both bounded by a count so that a measurement costs the same at ten million
stored drawings as at ten thousand: the last N drawings, and the last hour (its newest
`HOUR_CAP` at most). For each, the input descriptors of the drawings and the champion's
readings of them are scored against the reference the champion's training logged; each version
that read the window's drawings live or in shadow gets its accuracy estimated from its own
confidence, beside its accuracy measured on the labeled ones.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import numpy as np
from mnistream_common.drift import (
    INPUT_SIGNALS,
    SIGNALS,
    describe_inputs,
    describe_outputs,
    estimated_accuracy,
    scores,
)
from mnistream_common.events import DriftReference, utc_now
from mnistream_common.history_api import DriftOut, SignalOut, VersionEstimateOut
from mnistream_common.logs import get_logger
from mnistream_common.preprocessing import PREPROCESSING_VERSION
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from history_service.metrics import HistoryMetrics

log = get_logger(__name__)

HOUR_CAP: Final = 5000
HOUR: Final = timedelta(hours=1)
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MIN_DRAWINGS: Final = 50  # fewer: a score would be mostly noise
SERVING: Final = ("live", "shadow")  # the kinds of reading a serving version makes
MIN_LABELED: Final = 30  # fewer labeled readings: no accuracy gap
FRESH_S: Final = 5.0  # an API answer reuses a measurement this recent

_CHAMPION = text(
    "SELECT version, drift_reference FROM promotions ORDER BY promoted_at DESC LIMIT 1"
)
_WINDOW = text(
    "SELECT digit_id, model_input FROM drawings "
    "WHERE preprocessing_version = :version AND submitted_at >= :since "
    "ORDER BY submitted_at DESC, digit_id DESC LIMIT :limit"
)
_IDS = bindparam("ids", type_=ARRAY(UUID(as_uuid=True)))
# The champion's readings and those of versions that served the drawings (live or shadow), not
# every version a promotion's rescore made read them: a window costs the same after many.
_READINGS = text(
    "SELECT digit_id, model_version, kind, probabilities FROM predictions "
    "WHERE digit_id = ANY(:ids) AND (model_version = :champion OR kind IN ('live', 'shadow'))"
).bindparams(_IDS)
_LABELS = text("SELECT digit_id, label FROM labels WHERE digit_id = ANY(:ids)").bindparams(_IDS)


@dataclass(frozen=True)
class Thresholds:
    """When a signal, or a version's accuracy gap, raises its alarm."""

    psi: float = 0.2
    gap: float = 0.1


@dataclass(frozen=True)
class Window:
    """The drawings of one window, their readings and labels."""

    name: str
    inputs: np.ndarray  # N×784 uint8
    ids: list[uuid.UUID]
    readings: list[Any]
    labels: dict[uuid.UUID, int]


async def measure(
    engine: AsyncEngine, last: int, thresholds: Thresholds = Thresholds()
) -> DriftOut:
    """The drift report now: both windows against the champion's reference."""
    async with engine.connect() as conn:
        champion = (await conn.execute(_CHAMPION)).first()
        if champion is None:
            return _empty(None, None, "nothing is promoted yet")
        version, raw_reference = champion.version, champion.drift_reference
        windows = [
            await _window(conn, version, f"last {last}", last, None),
            await _window(conn, version, "last hour", HOUR_CAP, HOUR),
        ]
    reference = DriftReference.model_validate(raw_reference) if raw_reference else None
    if reference is None:
        return _empty(
            version,
            None,
            f"the champion v{version} has no drift reference (trained before references were "
            "logged): promote a version trained since",
        )
    report = await asyncio.to_thread(_score_all, version, reference, windows, thresholds)
    return report


def _empty(version: int | None, reference: str | None, note: str) -> DriftOut:
    return DriftOut(
        champion_version=version,
        reference=reference,
        computed_at=utc_now(),
        signals=[],
        versions=[],
        note=note,
    )


async def _window(
    conn: AsyncConnection, champion: int, name: str, limit: int, within: timedelta | None
) -> Window:
    since = utc_now() - within if within else EPOCH
    rows = (
        await conn.execute(
            _WINDOW, {"version": PREPROCESSING_VERSION, "since": since, "limit": limit}
        )
    ).all()
    ids = [row.digit_id for row in rows]
    inputs = np.frombuffer(b"".join(row.model_input for row in rows), dtype=np.uint8)
    found = await conn.execute(_READINGS, {"ids": ids, "champion": champion}) if ids else None
    readings = list(found.all()) if found is not None else []
    labels: dict[uuid.UUID, int] = {}
    if ids:
        labels = {row.digit_id: row.label for row in await conn.execute(_LABELS, {"ids": ids})}
    return Window(name, inputs.reshape(-1, 784), ids, readings, labels)


def _score_all(
    champion: int, reference: DriftReference, windows: list[Window], thresholds: Thresholds
) -> DriftOut:
    signals: list[SignalOut] = []
    versions: list[VersionEstimateOut] = []
    for window in windows:
        signals += _signals(champion, reference, window, thresholds)
        versions += _estimates(champion, window, thresholds)
    return DriftOut(
        champion_version=champion,
        reference=reference.source,
        computed_at=utc_now(),
        signals=signals,
        versions=versions,
    )


def _signals(
    champion: int, reference: DriftReference, window: Window, thresholds: Thresholds
) -> list[SignalOut]:
    mine = [r.probabilities for r in window.readings if r.model_version == champion]
    probabilities = np.asarray(mine, dtype=np.float64).reshape(-1, 10)
    measured = describe_inputs(window.inputs) | describe_outputs(probabilities)
    found = scores(reference, measured)
    out = []
    for name in [n for n in SIGNALS if n in reference.signals]:
        kind: Literal["input", "output"] = "input" if name in INPUT_SIGNALS else "output"
        count = len(window.inputs) if kind == "input" else len(probabilities)
        score = found.get(name) if count >= MIN_DRAWINGS else None
        out.append(
            SignalOut(
                window=window.name,
                signal=name,
                kind=kind,
                drawings=count,
                score=score,
                threshold=thresholds.psi,
                drifted=score is not None and score > thresholds.psi,
            )
        )
    return out


def _estimates(champion: int, window: Window, thresholds: Thresholds) -> list[VersionEstimateOut]:
    serving = {champion} | {
        r.model_version for r in window.readings if r.kind in ("live", "shadow")
    }
    out = []
    for version in sorted(serving, reverse=True):
        mine = [r for r in window.readings if r.model_version == version]
        if not mine:
            continue
        probabilities = np.asarray([r.probabilities for r in mine], dtype=np.float64)
        confidence = probabilities.max(axis=1)
        labeled = [
            (int(np.argmax(r.probabilities)), window.labels[r.digit_id])
            for r in mine
            if r.digit_id in window.labels
        ]
        measured = (
            sum(predicted == label for predicted, label in labeled) / len(labeled)
            if labeled
            else None
        )
        estimated = estimated_accuracy(confidence)
        gap = (
            estimated - measured
            if estimated is not None and measured is not None and len(labeled) >= MIN_LABELED
            else None
        )
        out.append(
            VersionEstimateOut(
                window=window.name,
                version=version,
                readings=len(mine),
                estimated_accuracy=estimated,
                labeled=len(labeled),
                measured_accuracy=measured,
                gap=gap,
                gap_threshold=thresholds.gap,
                drifted=gap is not None and abs(gap) > thresholds.gap,
            )
        )
    return out


@dataclass
class DriftMonitor:
    """Measures drift every `interval_s` and keeps the Prometheus gauges up to date; answers
    the API from a measurement at most `FRESH_S` old, so that many pages polling the chart (or
    a client asking in a loop) cost one measurement, not one each."""

    engine: AsyncEngine
    metrics: HistoryMetrics
    last: int
    thresholds: Thresholds
    interval_s: float
    _latest: dict[int, tuple[float, DriftOut]] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def run(self) -> None:
        """Measure until cancelled; a failed measurement is logged and tried again."""
        while True:
            try:
                await self.report(self.last, fresh_s=0.0)
            except Exception as exc:  # Postgres away: the next round tries again
                log.warning("drift could not be measured", error=repr(exc))
            await asyncio.sleep(self.interval_s)

    async def report(self, last: int, fresh_s: float = FRESH_S) -> DriftOut:
        """The drift of the last `last` drawings (and the hour), measured at most `fresh_s` ago;
        a measurement of the default window feeds the gauges."""
        async with self._lock:  # one measurement at a time; the others wait and reuse it
            taken = self._latest.get(last)
            if taken is not None and time.monotonic() - taken[0] <= fresh_s:
                return taken[1]
            report = await measure(self.engine, last, self.thresholds)
            self._latest = {k: v for k, v in self._latest.items() if k == self.last}
            self._latest[last] = (time.monotonic(), report)
        if last == self.last:
            self.observe(report)
        return report

    def observe(self, report: DriftOut) -> None:
        """Put a report into the gauges (signals that could not be scored are left out)."""
        m = self.metrics
        for gauge in (m.drift_score, m.drift_alarm, m.drift_drawings, m.accuracy_estimated):
            gauge.clear()
        m.accuracy_measured.clear()
        m.drift_threshold.set(self.thresholds.psi)
        m.champion_version.set(report.champion_version or 0)
        for s in report.signals:
            m.drift_drawings.labels(s.window, s.signal).set(s.drawings)
            if s.score is not None:
                m.drift_score.labels(s.window, s.signal).set(s.score)
                m.drift_alarm.labels(s.window, s.signal).set(int(s.drifted))
        for v in report.versions:
            if v.estimated_accuracy is not None:
                m.accuracy_estimated.labels(v.window, str(v.version)).set(v.estimated_accuracy)
            if v.measured_accuracy is not None and v.gap is not None:
                m.accuracy_measured.labels(v.window, str(v.version)).set(v.measured_accuracy)
