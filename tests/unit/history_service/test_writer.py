"""What the history writes for a batch: one row per key, chosen by a rule that does not depend on
arrival order, so redelivery and replay give the same rows.

The writer runs against a recording engine that keeps each cached statement with the parameter
rows it is executed over (no database; the real upserts are integration tests).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from history_service.writer import HistoryWriter, InputDrawing
from mnistream_common.events import (
    DigitLabeled,
    DigitPredicted,
    ModelRef,
    PredictionKind,
)
from mnistream_common.storage import S3Uri
from sqlalchemy import TextClause
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import prediction, promotion, submitted, tiny_onnx_model

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DIGIT = uuid.UUID("01953c1e-8a4b-7c2d-9e0f-1a2b3c4d5e6f")


@dataclass
class RecordingEngine:
    """Stands in for an AsyncEngine: keeps every statement executed in a transaction."""

    statements: list[tuple[Any, list[dict[str, Any]]]] = field(default_factory=list)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[RecordingEngine]:
        yield self

    connect = begin  # reads outside a transaction: the same recording

    figures: list[str] = field(default_factory=list)

    async def execute(self, statement: Any, rows: Any = None) -> Any:
        if isinstance(statement, TextClause):  # the figures' lock, reads and sums: no rows here
            self.figures.append(str(statement))
            return _NoRows()
        # The writer executes one cached statement over many parameter rows (executemany).
        assert rows is not None, "every write is an executemany over parameter rows"
        self.statements.append((statement, rows))
        return None

    def rows(self, table: str) -> list[dict[str, Any]]:
        """The rows written to `table`, across statements."""
        found: list[dict[str, Any]] = []
        for statement, rows in self.statements:
            if statement.table.name == table:
                found.extend(rows)
        return found


class _NoRows:
    def all(self) -> list[Any]:
        return []


@dataclass
class RecordingStore:
    """Stands in for the ObjectStore: keeps what was put."""

    objects: dict[str, bytes] = field(default_factory=dict)

    async def put_many(self, bucket: str, objects: list[tuple[str, bytes]]) -> None:
        self.objects.update({str(S3Uri(bucket, key)): data for key, data in objects})


def writer() -> tuple[HistoryWriter, RecordingEngine, RecordingStore]:
    engine, store = RecordingEngine(), RecordingStore()
    return HistoryWriter(cast(AsyncEngine, engine), cast(Any, store), "drawings"), engine, store


def predicted(
    kind: PredictionKind = "live",
    *,
    version: int = 1,
    at: datetime = AT,
    digit_id: uuid.UUID = DIGIT,
    event_id: uuid.UUID | None = None,
    digit: int = 3,
    job_id: uuid.UUID | None = None,
    job_total: int = 10,
) -> DigitPredicted:
    return prediction(
        digit_id,
        ModelRef(name="mnist-digits", version=version, sha256="ab" * 32),
        digit=digit,
        confidence=1.0,
        kind=kind,
        worker_id="w",
        event_id=event_id or uuid.uuid4(),
        occurred_at=at,
        job_id=job_id,
        job_total=None if job_id is None else job_total,
    )


def labeled(label: int, at: datetime, event_id: uuid.UUID | None = None) -> DigitLabeled:
    return DigitLabeled(
        event_id=event_id or uuid.uuid4(), digit_id=DIGIT, label=label, labeled_at=at
    )


async def kept_predictions(events: Sequence[DigitPredicted]) -> list[dict[str, Any]]:
    history, engine, _ = writer()
    await history.predictions(events)
    return engine.rows("predictions")


# --- predictions ----------------------------------------------------------------------------


async def test_live_beats_rescore_beats_candidate_in_any_order() -> None:
    events = [predicted("candidate", digit=1), predicted("live", digit=2), predicted("rescore")]

    for order in itertools.permutations(events):
        rows = await kept_predictions(order)

        assert len(rows) == 1
        assert (rows[0]["kind"], rows[0]["predicted_digit"]) == ("live", 2)


async def test_the_earliest_prediction_of_a_kind_wins_then_the_smaller_event_id() -> None:
    low, high = uuid.UUID(int=1), uuid.UUID(int=2)
    events = [
        predicted("rescore", at=AT + timedelta(seconds=5), digit=9),
        predicted("rescore", at=AT, event_id=high, digit=8),
        predicted("rescore", at=AT, event_id=low, digit=7),
    ]

    for order in itertools.permutations(events):
        rows = await kept_predictions(order)

        assert [(r["predicted_digit"], r["event_id"]) for r in rows] == [(7, low)]


async def test_each_model_version_and_each_drawing_keeps_its_own_row() -> None:
    other = uuid.uuid4()
    events = [
        predicted(version=1),
        predicted(version=2),
        predicted(version=1, digit_id=other),
        predicted(version=1),  # a redelivery
    ]

    rows = await kept_predictions(events)

    assert sorted((r["digit_id"], r["model_version"]) for r in rows) == sorted(
        [(DIGIT, 1), (DIGIT, 2), (other, 1)]
    )


async def test_a_job_planned_twice_gets_the_larger_total_in_any_order() -> None:
    job, other = uuid.uuid4(), uuid.uuid4()
    early = predicted("rescore", version=2, at=AT, job_id=job, job_total=6)
    late = predicted(
        "rescore", version=2, at=AT + timedelta(seconds=5), job_id=job, job_total=32, digit_id=other
    )

    for order in ([early, late], [late, early]):
        history, engine, _ = writer()
        await history.predictions(order)
        [job_row] = engine.rows("rescore_jobs")
        assert job_row["total"] == 32


async def test_job_progress_counts_each_drawing_once_and_spans_the_batch() -> None:
    job = uuid.uuid4()
    first, last = AT, AT + timedelta(seconds=30)
    other = uuid.uuid4()
    events = [
        predicted("rescore", version=2, at=last, job_id=job),
        predicted("rescore", version=2, at=first, job_id=job),  # the same drawing again
        predicted(
            "rescore", version=2, at=first + timedelta(seconds=1), job_id=job, digit_id=other
        ),
        predicted("live", version=2),
    ]
    history, engine, _ = writer()

    await history.predictions(events)

    [job_row] = engine.rows("rescore_jobs")
    assert (job_row["job_id"], job_row["total"], job_row["model_version"]) == (job, 10, 2)
    assert (job_row["started_at"], job_row["updated_at"]) == (first, last)
    items = engine.rows("rescore_job_items")
    assert sorted(i["digit_id"] for i in items) == sorted([DIGIT, other])


async def test_an_empty_batch_writes_nothing() -> None:
    history, engine, _ = writer()

    await history.predictions([])
    await history.labels([])
    await history.promotions([])
    await history.drawings([])

    assert engine.statements == []


# --- labels ---------------------------------------------------------------------------------


async def test_the_latest_label_wins_in_any_order() -> None:
    events = [
        labeled(1, AT),
        labeled(7, AT + timedelta(minutes=2)),
        labeled(4, AT + timedelta(minutes=1)),
    ]

    for order in itertools.permutations(events):
        history, engine, _ = writer()
        await history.labels(order)

        assert [r["label"] for r in engine.rows("labels")] == [7]


async def test_labels_at_the_same_instant_are_settled_by_the_larger_event_id() -> None:
    events = [labeled(2, AT, uuid.UUID(int=9)), labeled(5, AT, uuid.UUID(int=10))]

    for order in itertools.permutations(events):
        history, engine, _ = writer()
        await history.labels(order)

        assert [r["label"] for r in engine.rows("labels")] == [5]


# --- promotions and drawings ----------------------------------------------------------------


async def test_a_promotion_delivered_twice_is_one_ledger_row() -> None:
    event = promotion(tiny_onnx_model(1), 1)
    history, engine, _ = writer()

    await history.promotions([event, event])

    [row] = engine.rows("promotions")
    assert (row["event_id"], row["version"], row["sha256"]) == (
        event.event_id,
        1,
        event.model.sha256,
    )


@pytest.mark.parametrize("copies", [1, 3])
async def test_a_drawing_is_stored_under_its_id_with_its_sha256(copies: int) -> None:
    event = submitted()
    history, engine, store = writer()

    await history.drawings([InputDrawing(event, event.model_input or b"", 1)] * copies)

    assert store.objects == {f"s3://drawings/{event.digit_id}": event.image}
    [row] = engine.rows("drawings")
    assert row["digit_id"] == event.digit_id
    assert row["size_bytes"] == len(event.image)
    assert len(row["image_sha256"]) == 64
