"""history-service's upserts against the real PostgreSQL, one event per batch in both arrival
orders: the `ON CONFLICT ... WHERE` rules decide between rows already written and rows arriving,
which the unit tests (one batch, no database) cannot reach. Fails when Postgres or MinIO is down.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from history_service.migrate import upgrade_async
from history_service.writer import HistoryWriter, InputDrawing
from mnistream_common.events import (
    DigitLabeled,
    DigitPredicted,
    ModelRef,
    PredictionKind,
    RescoreSkipped,
    SkippedDrawing,
)
from mnistream_common.settings import S3Settings
from mnistream_common.storage import ObjectStore, make_minio
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.helpers import prediction, submitted

pytestmark = pytest.mark.integration

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ORDERS = pytest.mark.parametrize("reverse", [False, True], ids=["in-order", "reversed"])


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A database of its own on the stack's PostgreSQL, migrated, dropped afterwards: rows
    written here never reach the topics, so in the shared database they would break the
    replay test's "the topics rebuild the same rows" (they did, on a reused test stack)."""
    name = f"writer_it_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    await upgrade_async(url)
    created = create_async_engine(url)
    yield created
    await created.dispose()
    async with admin.connect() as connection:
        await connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    await admin.dispose()


@pytest.fixture(scope="module")
def bucket(s3_settings: S3Settings) -> Iterator[str]:
    """A bucket of its own, for the same reason, emptied and removed afterwards."""
    client = make_minio(s3_settings)
    name = f"writer-it-{uuid.uuid4().hex[:12]}"
    client.make_bucket(name)
    yield name
    for item in client.list_objects(name, recursive=True):
        client.remove_object(name, item.object_name or "")
    client.remove_bucket(name)


@pytest.fixture
def history(engine: AsyncEngine, s3_settings: S3Settings, bucket: str) -> HistoryWriter:
    return HistoryWriter(engine, ObjectStore(make_minio(s3_settings)), bucket)


async def one_row(engine: AsyncEngine, sql: str, **params: Any) -> dict[str, Any]:
    async with engine.connect() as connection:
        rows = (await connection.execute(text(sql), params)).mappings().all()
    assert len(rows) == 1, rows
    return dict(rows[0])


def arriving(events: Sequence[Any], reverse: bool) -> list[Any]:
    return list(reversed(events)) if reverse else list(events)


def predicted(
    digit_id: uuid.UUID, kind: PredictionKind, at: datetime, digit: int, **fields: Any
) -> DigitPredicted:
    model = ModelRef(name="mnist-digits", version=3, sha256="ab" * 32)
    return prediction(digit_id, model, kind=kind, digit=digit, occurred_at=at, **fields)


@ORDERS
async def test_a_live_prediction_replaces_a_rescore_already_written_and_is_never_replaced(
    history: HistoryWriter, engine: AsyncEngine, reverse: bool
) -> None:
    digit = uuid.uuid4()
    events = [
        predicted(digit, "rescore", AT, 1),
        predicted(digit, "live", AT + timedelta(seconds=5), 2),
        predicted(digit, "candidate", AT - timedelta(seconds=5), 3),
    ]
    for event in arriving(events, reverse):
        await history.predictions([event])

    row = await one_row(
        engine, "SELECT kind, predicted_digit FROM predictions WHERE digit_id = :d", d=digit
    )
    assert (row["kind"], row["predicted_digit"]) == ("live", 2)


@ORDERS
async def test_of_one_kind_the_earliest_prediction_stays_then_the_smaller_event_id(
    history: HistoryWriter, engine: AsyncEngine, reverse: bool
) -> None:
    digit = uuid.uuid4()
    low, high = uuid.UUID(int=2**100 + 1), uuid.UUID(int=2**100 + 2)
    events = [
        predicted(digit, "rescore", AT + timedelta(seconds=5), 9),
        predicted(digit, "rescore", AT, 8, event_id=high),
        predicted(digit, "rescore", AT, 7, event_id=low),
    ]
    for event in arriving(events, reverse):
        await history.predictions([event])

    row = await one_row(
        engine, "SELECT predicted_digit, event_id FROM predictions WHERE digit_id = :d", d=digit
    )
    assert (row["predicted_digit"], row["event_id"]) == (7, low)


@ORDERS
async def test_the_latest_label_stays_then_the_larger_event_id(
    history: HistoryWriter, engine: AsyncEngine, reverse: bool
) -> None:
    digit = uuid.uuid4()
    low, high = uuid.UUID(int=2**100 + 1), uuid.UUID(int=2**100 + 2)
    events = [
        DigitLabeled(digit_id=digit, label=1, labeled_at=AT - timedelta(seconds=5)),
        DigitLabeled(event_id=high, digit_id=digit, label=2, labeled_at=AT),
        DigitLabeled(event_id=low, digit_id=digit, label=3, labeled_at=AT),
    ]
    for event in arriving(events, reverse):
        await history.labels([event])

    row = await one_row(engine, "SELECT label, event_id FROM labels WHERE digit_id = :d", d=digit)
    assert (row["label"], row["event_id"]) == (2, high)


@ORDERS
async def test_only_a_newer_preprocessing_replaces_a_stored_model_input(
    history: HistoryWriter, engine: AsyncEngine, reverse: bool
) -> None:
    event = submitted()
    older = InputDrawing(event, bytes([1]) * 784, 1)
    newer = InputDrawing(event, bytes([2]) * 784, 2)
    for drawing in arriving([older, newer], reverse):
        await history.drawings([drawing])

    row = await one_row(
        engine,
        "SELECT model_input, preprocessing_version, event_id FROM drawings WHERE digit_id = :d",
        d=event.digit_id,
    )
    assert (row["model_input"], row["preprocessing_version"]) == (bytes([2]) * 784, 2)
    assert row["event_id"] == event.event_id


@ORDERS
async def test_a_job_seen_in_two_batches_spans_both_and_counts_each_drawing_once(
    history: HistoryWriter, engine: AsyncEngine, reverse: bool
) -> None:
    job, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    early = predicted(first, "rescore", AT, 1, job_id=job, job_total=6)
    late = predicted(second, "rescore", AT + timedelta(seconds=30), 2, job_id=job, job_total=32)
    again = predicted(first, "rescore", AT + timedelta(seconds=60), 1, job_id=job, job_total=6)
    for event in arriving([early, late, again], reverse):
        await history.predictions([event])

    row = await one_row(
        engine,
        "SELECT total, started_at, updated_at, "
        "(SELECT count(*) FROM rescore_job_items i WHERE i.job_id = j.job_id) AS done "
        "FROM rescore_jobs j WHERE job_id = :j",
        j=job,
    )
    assert (row["total"], row["done"]) == (32, 2)
    assert (row["started_at"], row["updated_at"]) == (AT, AT + timedelta(seconds=60))


def skipped_event(job: uuid.UUID, digit: uuid.UUID, reason: str, at: datetime) -> RescoreSkipped:
    return RescoreSkipped(
        job_id=job,
        kind="rescore",
        model=ModelRef(name="mnist-digits", version=3, sha256="ab" * 32),
        chunk_index=0,
        job_total=2,
        skipped=[SkippedDrawing(digit_id=digit, reason=reason)],
        worker_id="rescore-it",
        occurred_at=at,
    )


@ORDERS
async def test_a_skipped_drawing_counts_as_done_and_a_scored_one_stays_scored(
    history: HistoryWriter, engine: AsyncEngine, reverse: bool
) -> None:
    job, scored, lost = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    writes = [
        ("skipped", skipped_event(job, scored, "its image object is missing", AT)),
        ("skipped", skipped_event(job, lost, "not stored", AT + timedelta(seconds=1))),
        ("skipped", skipped_event(job, lost, "its image cannot be read", AT)),
        (
            "predicted",
            predicted(scored, "rescore", AT + timedelta(seconds=2), 4, job_id=job, job_total=2),
        ),
    ]
    for kind, event in arriving(writes, reverse):
        if kind == "skipped":
            await history.skipped([event])
        else:
            await history.predictions([event])

    row = await one_row(
        engine,
        "SELECT total, (SELECT count(*) FROM rescore_job_items i WHERE i.job_id = j.job_id) "
        "AS done, (SELECT array_agg(i.skipped ORDER BY i.skipped) FROM rescore_job_items i "
        "WHERE i.job_id = j.job_id AND i.skipped IS NOT NULL) AS reasons "
        "FROM rescore_jobs j WHERE job_id = :j",
        j=job,
    )
    # Both drawings done; the scored one has no reason whichever came first; the smaller reason
    # of the two for the lost one.
    assert (row["total"], row["done"]) == (2, 2)
    assert row["reasons"] == ["its image cannot be read"]
