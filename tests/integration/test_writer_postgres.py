"""history-service's upserts against the real PostgreSQL, one event per batch in both arrival
orders: the `ON CONFLICT ... WHERE` rules decide between rows already written and rows arriving,
which the unit tests (one batch, no database) cannot reach. Fails when Postgres or MinIO is down.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from history_service import figures, queries, rollouts
from history_service.consumers import Consumers, Health
from history_service.metrics import HistoryMetrics
from history_service.migrate import upgrade
from history_service.settings import Settings
from history_service.writer import HistoryWriter, InputDrawing
from mnistream_common.events import (
    DeadLetter,
    DigitErased,
    DigitLabeled,
    DigitPredicted,
    ModelPromoted,
    ModelRef,
    ModelRollout,
    PredictionKind,
    RescoreSkipped,
    SkippedDrawing,
)
from mnistream_common.kafka import build_dead_letter, durable_producer
from mnistream_common.settings import KafkaSettings, S3Settings
from mnistream_common.storage import ObjectStore, drawing_key, make_minio
from mnistream_common.topics import DIGITS_ERASED
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.helpers import prediction, promotion, submitted

pytestmark = pytest.mark.integration

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ORDERS = pytest.mark.parametrize("reverse", [False, True], ids=["in-order", "reversed"])


@asynccontextmanager
async def own_database(database_url: str, revision: str = "head") -> AsyncIterator[AsyncEngine]:
    """A database of its own on the stack's PostgreSQL, migrated to `revision`, dropped
    afterwards: rows written here never reach the topics, so in the shared database they would
    break the replay test's "the topics rebuild the same rows" (they did, on a reused stack)."""
    name = f"writer_it_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    await asyncio.to_thread(upgrade, url, revision)
    created = create_async_engine(url)
    try:
        yield created
    finally:
        await created.dispose()
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        await admin.dispose()


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated database of the writer tests' own."""
    async with own_database(database_url) as created:
        yield created


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


# ---------------------------------------------------------------- figures kept up as rows change


@dataclass(frozen=True)
class Scenario:
    """Events about a few drawings, every one of them written, in some order and batching."""

    predictions: list[DigitPredicted]
    labels: list[DigitLabeled]
    skipped: list[RescoreSkipped]
    promotions: list[ModelPromoted]
    erasures: list[DigitErased]


def scenario(base: int, seed: int = 7) -> Scenario:
    """The same random events every call, for versions base+1..base+3 and jobs of their own:
    several predictions per drawing and version (kinds, times and digits that replace one
    another), labels that change, a job whose drawings are scored, skipped, or both, and the
    promotions that make the ledger's comparisons (2 over 1, 3 over 2, then 1 back over 3)."""
    rng = random.Random(seed)
    job = uuid.UUID(int=base * 2**64 + 1)
    digits = [uuid.UUID(int=base * 2**64 + 1000 + i) for i in range(40)]
    predictions: list[DigitPredicted] = []
    labels: list[DigitLabeled] = []
    skipped: list[RescoreSkipped] = []
    for n, digit in enumerate(digits):
        for version in range(base + 1, base + 4):
            for _ in range(rng.randint(0, 3)):
                kind: PredictionKind = rng.choice(["live", "rescore", "candidate"])
                in_job = kind == "rescore" and version == base + 2
                model = ModelRef(name="mnist-digits", version=version, sha256="cd" * 32)
                predictions.append(
                    prediction(
                        digit,
                        model,
                        kind=kind,
                        digit=rng.choice([1, 7, 7, 9]),
                        confidence=rng.choice([0.5, 0.734567, 0.99]),
                        occurred_at=AT + timedelta(seconds=rng.randint(0, 5)),
                        event_id=uuid.UUID(int=base * 2**64 + 10_000 + len(predictions)),
                        job_id=job if in_job else None,
                        job_total=len(digits) if in_job else None,
                    )
                )
        for _ in range(rng.randint(0, 2)):
            labels.append(
                DigitLabeled(
                    digit_id=digit,
                    label=rng.choice([1, 7, 9]),
                    labeled_at=AT + timedelta(seconds=rng.randint(0, 3)),
                    event_id=uuid.UUID(int=base * 2**64 + 20_000 + len(labels)),
                )
            )
        if n % 3 == 0:
            skipped.append(
                RescoreSkipped(
                    job_id=job,
                    kind="rescore",
                    model=ModelRef(name="mnist-digits", version=base + 2, sha256="cd" * 32),
                    chunk_index=0,
                    job_total=len(digits),
                    skipped=[SkippedDrawing(digit_id=digit, reason=rng.choice(["a", "b"]))],
                    worker_id="rescore-it",
                    occurred_at=AT,
                )
            )
    promotions = [
        promotion(b"scenario", base + version, previous=base + previous)
        for version, previous in ((2, 1), (3, 2), (1, 3))
    ]
    erasures = [
        DigitErased(
            digit_id=digit,
            erased_at=AT,
            requested_by="it",
            event_id=uuid.UUID(int=base * 2**64 + 30_000 + n),
        )
        for n, digit in enumerate(digits[::9])
    ]
    return Scenario(predictions, labels, skipped, promotions, erasures)


async def write_shuffled(history: HistoryWriter, events: Scenario, seed: int) -> None:
    """Every event of `events`, in a shuffled order, in batches of 1 to 6 of one kind: a
    promotion may arrive before or after the predictions it compares, an erasure before or
    after what it erases."""
    rng = random.Random(seed)
    tagged: list[tuple[str, Any]] = [
        *(("p", e) for e in events.predictions),
        *(("l", e) for e in events.labels),
        *(("s", e) for e in events.skipped),
        *(("m", e) for e in events.promotions),
        *(("e", e) for e in events.erasures),
    ]
    rng.shuffle(tagged)
    while tagged:
        kind = tagged[0][0]
        size = rng.randint(1, 6)
        batch = [e for k, e in tagged if k == kind][:size]
        tagged = [(k, e) for k, e in tagged if not (k == kind and any(e is b for b in batch))]
        if kind == "p":
            await history.predictions(batch)
        elif kind == "l":
            await history.labels(batch)
        elif kind == "m":
            await history.promotions(batch)
        elif kind == "e":
            await history.erasures(batch)
        else:
            await history.skipped(batch)


async def figure_rows(engine: AsyncEngine, sql: str) -> set[tuple[Any, ...]]:
    async with engine.connect() as connection:
        return {tuple(row) for row in (await connection.execute(text(sql))).all()}


VERSION_COLUMNS = {
    "version_counts": 1,
    "version_labels": 1,
    "version_pairs": 2,
    "prediction_flips": 2,
}


def relative(table: str, rows: set[tuple[Any, ...]], base: int) -> set[tuple[Any, ...]]:
    """The rows of one scenario's versions, with its versions and drawings made relative to its
    base (so two scenarios' rows compare)."""

    def plain(value: Any) -> Any:
        return uuid.UUID(int=value.int - base * 2**64) if isinstance(value, uuid.UUID) else value

    versions = VERSION_COLUMNS[table]
    return {
        tuple(v - base for v in row[:versions]) + tuple(plain(v) for v in row[versions:])
        for row in rows
        if base < row[0] <= base + 3
    }


async def test_the_kept_figures_equal_a_recomputation_whatever_the_order_of_writes(
    history: HistoryWriter, engine: AsyncEngine
) -> None:
    """The same events written in two shuffled orders and batchings (to versions and drawings of
    their own): each table's kept figures equal the figures recomputed from the rows, and both
    orders keep the same figures."""
    first, second = 1000, 2000
    await write_shuffled(history, scenario(first), seed=1)
    await write_shuffled(history, scenario(second), seed=2)

    for table, (_, recompute) in figures.RECOMPUTE.items():
        kept = await figure_rows(engine, figures.maintained(table))
        assert kept == await figure_rows(engine, recompute), table
        if table in VERSION_COLUMNS:
            mine = relative(table, kept, first)
            assert mine, f"{table}: the scenario wrote nothing there, so this compares nothing"
            assert mine == relative(table, kept, second), table
    jobs = await figure_rows(
        engine,
        "SELECT model_version % 1000, total, done, skipped FROM rescore_jobs "
        f"WHERE model_version IN ({first + 2}, {second + 2})",
    )
    assert len(jobs) == 1, jobs  # the two jobs alike: the same total, done and skipped
    [(_, total, done, skipped)] = jobs
    assert 0 < skipped < done <= total, jobs
    erased = [e.digit_id for e in scenario(first).erasures + scenario(second).erasures]
    assert await stored_of(engine, erased) == {"drawings": 0, "predictions": 0, "labels": 0}


async def stored_of(engine: AsyncEngine, digit_ids: Sequence[uuid.UUID]) -> dict[str, int]:
    """How many rows of these drawings each table holds."""
    counts: dict[str, int] = {}
    async with engine.connect() as connection:
        for table in ("drawings", "predictions", "labels"):
            query = text(f"SELECT count(*) FROM {table} WHERE digit_id = ANY(:ids)")
            found = await connection.execute(query, {"ids": list(digit_ids)})
            counts[table] = found.scalar_one()
    return counts


@ORDERS
async def test_an_erased_drawing_is_removed_and_never_stored_again_in_either_order(
    history: HistoryWriter,
    engine: AsyncEngine,
    s3_settings: S3Settings,
    bucket: str,
    reverse: bool,
) -> None:
    """A drawing, its predictions by two versions (one promoted over the other) and its label,
    with its erasure written after all of them or before any: either way nothing of it is left,
    its image is gone, the figures are what the remaining rows add up to, and a drawing written
    with it in the same batches is untouched."""
    base = 400 if reverse else 500  # versions of its own, below the other tests'
    kept, erased = submitted(b"kept-image"), submitted(b"erased-image")
    ids = [kept.digit_id, erased.digit_id]
    events: list[tuple[str, Any]] = [
        ("d", [InputDrawing(e, bytes([3]) * 784, 1) for e in (kept, erased)]),
        ("m", [promotion(b"erasure", base + 2, previous=base + 1)]),
        *(
            (
                "p",
                [
                    prediction(d, ModelRef(name="m", version=v, sha256="ab" * 32), digit=digit)
                    for d in ids
                ],
            )
            for v, digit in ((base + 1, 4), (base + 2, 9))
        ),
        ("l", [DigitLabeled(digit_id=d, label=4, labeled_at=AT) for d in ids]),
    ]
    erasure = ("e", [DigitErased(digit_id=erased.digit_id, erased_at=AT, requested_by="it")])
    writers: dict[str, Callable[[Any], Awaitable[None]]] = {
        "d": history.drawings,
        "m": history.promotions,
        "p": history.predictions,
        "l": history.labels,
        "e": history.erasures,
    }
    for kind, batch in [erasure, *events] if reverse else [*events, erasure]:
        await writers[kind](batch)

    assert await stored_of(engine, [erased.digit_id]) == {
        "drawings": 0,
        "predictions": 0,
        "labels": 0,
    }
    assert await stored_of(engine, [kept.digit_id]) == {
        "drawings": 1,
        "predictions": 2,
        "labels": 1,
    }
    objects = {o.object_name for o in make_minio(s3_settings).list_objects(bucket, recursive=True)}
    assert drawing_key(kept.digit_id) in objects
    assert drawing_key(erased.digit_id) not in objects
    for table, (_, recompute) in figures.RECOMPUTE.items():
        assert await figure_rows(engine, figures.maintained(table)) == await figure_rows(
            engine, recompute
        ), table
    flips = await figure_rows(
        engine, f"SELECT digit_id FROM prediction_flips WHERE model_version = {base + 2}"
    )
    assert flips == {(kept.digit_id,)}
    counts = await figure_rows(
        engine,
        "SELECT model_version, predictions FROM version_counts "
        f"WHERE model_version BETWEEN {base + 1} AND {base + 2}",
    )
    assert counts == {(base + 1, 1), (base + 2, 1)}


async def all_flips(engine: AsyncEngine, version: int, previous: int) -> list[tuple[Any, ...]]:
    """Every page of the flip report of `version` against `previous`, 7 flips at a time."""
    found: list[tuple[Any, ...]] = []
    before: uuid.UUID | None = None
    async with engine.connect() as connection:
        while True:
            page = await queries.flips_page(connection, version, previous, 7, before)
            found += [(f["digit_id"], f["from"], f["to"], f["label"]) for f in page["flips"]]
            if (before := page["flips_next"]) is None:
                return found


async def test_flips_are_kept_for_the_ledgers_comparisons_and_read_for_any_other_pair(
    history: HistoryWriter, engine: AsyncEngine
) -> None:
    """Five versions read 40 drawings (each promoted over the one before): the flips kept are
    the four comparisons', a row per drawing and comparison at most, not one per pair of
    versions; the report against a version it was not promoted over pages the same flips as
    a recomputation from the predictions."""
    base, rng = 3000, random.Random(5)
    digits = [uuid.UUID(int=base * 2**64 + i) for i in range(40)]
    await history.labels(
        [
            DigitLabeled(digit_id=d, label=3, labeled_at=AT, event_id=uuid.uuid4())
            for d in digits[::4]
        ]
    )
    for version in range(base + 1, base + 6):
        if version > base + 1:
            await history.promotions([promotion(b"flips", version, previous=version - 1)])
        model = ModelRef(name="mnist-digits", version=version, sha256="ef" * 32)
        await history.predictions(
            [prediction(d, model, kind="rescore", digit=rng.choice([3, 5, 8])) for d in digits]
        )

    kept = await figure_rows(
        engine,
        f"SELECT model_version, other_version FROM prediction_flips WHERE model_version > {base}",
    )
    assert kept == {(base + v, base + v - 1) for v in range(2, 6)}
    expected = sorted(
        await figure_rows(
            engine,
            "SELECT n.digit_id, o.predicted_digit, n.predicted_digit, l.label FROM predictions n "
            "JOIN predictions o ON o.digit_id = n.digit_id LEFT JOIN labels l "
            f"ON l.digit_id = n.digit_id WHERE n.model_version = {base + 5} "
            f"AND o.model_version = {base + 2} AND o.predicted_digit <> n.predicted_digit",
        ),
        reverse=True,
    )
    assert len(expected) > 7, "the report spans pages"
    assert await all_flips(engine, base + 5, base + 2) == expected
    stats = await one_row(
        engine,
        "SELECT sum(drawings) FILTER (WHERE other_digit <> digit) AS flipped FROM version_pairs "
        f"WHERE model_version = {base + 5} AND other_version = {base + 2}",
    )
    assert stats["flipped"] == len(expected)
    chained = await all_flips(engine, base + 5, base + 4)
    assert chained and chained == sorted(chained, reverse=True)


async def test_migrations_0005_and_0006_fill_the_figures_from_the_rows_stored_before_them(
    database_url: str,
) -> None:
    """Rows written by the writer of revision 0004 (whose SQL is replayed here as plain
    inserts), then the upgrade: the figures 0005 fills are those the rows add up to, and 0006
    keeps the flips of the ledger's comparison (2 over 1) only."""
    async with own_database(database_url, "0004") as old:
        job = uuid.uuid4()
        async with old.begin() as connection:
            for n in range(30):
                digit = uuid.UUID(int=5000 + n)
                for version, read in ((1, n % 3), (2, n % 4)):
                    await connection.execute(
                        OLD_PREDICTION,
                        {
                            "d": digit,
                            "v": version,
                            "p": read,
                            "c": 0.5 + n / 100,
                            "k": "rescore" if version == 2 else "live",
                            "j": job if version == 2 else None,
                        },
                    )
                if n % 2:
                    await connection.execute(OLD_LABEL, {"d": digit, "l": n % 3})
                await connection.execute(
                    OLD_ITEM, {"j": job, "d": digit, "s": "x" if n % 5 == 0 else None}
                )
            await connection.execute(OLD_JOB, {"j": job})
            await connection.execute(OLD_PROMOTION)
        await asyncio.to_thread(upgrade, old.url.render_as_string(hide_password=False))
        for table, (_, recompute) in figures.RECOMPUTE.items():
            kept = await figure_rows(old, figures.maintained(table))
            assert kept, f"{table}: nothing filled"
            assert kept == await figure_rows(old, recompute), table


OLD_PREDICTION = text(
    "INSERT INTO predictions (digit_id, model_version, model_name, model_sha256, predicted_digit, "
    "confidence, probabilities, kind, kind_rank, job_id, worker_id, provider, timings, "
    "predicted_at, event_id) VALUES (:d, :v, 'mnist-digits', 'ab', :p, :c, '{}', :k, 0, :j, "
    "'w', 'CPUExecutionProvider', '{}', now(), gen_random_uuid())"
)
OLD_LABEL = text(
    "INSERT INTO labels (digit_id, label, labeled_at, event_id) "
    "VALUES (:d, :l, now(), gen_random_uuid())"
)
OLD_PROMOTION = text(
    "INSERT INTO promotions (event_id, model_name, version, previous_version, sha256, onnx_uri, "
    "architecture, metrics, promoted_by, reason, promoted_at) VALUES (gen_random_uuid(), "
    "'mnist-digits', 2, 1, 'ab', 's3://mlflow/v2.onnx', 'cnn', '{}', 'it', 'it', now())"
)
OLD_ITEM = text("INSERT INTO rescore_job_items (job_id, digit_id, skipped) VALUES (:j, :d, :s)")
OLD_JOB = text(
    "INSERT INTO rescore_jobs (job_id, kind, model_version, total, started_at, updated_at) "
    "VALUES (:j, 'rescore', 2, 30, now(), now())"
)


async def test_a_replay_applies_the_whole_erasure_ledger_before_it_consumes(
    history: HistoryWriter, engine: AsyncEngine, kafka: KafkaSettings
) -> None:
    """The erasures in digits.erased reach an emptied database before the group reads anything
    again, so a replayed submission of an erased drawing is refused on arrival (not stored
    until its erasure is read again, in whatever order the group's fetches go)."""
    erasure = DigitErased(digit_id=uuid.uuid4(), erased_at=AT, requested_by="it")
    async with durable_producer(kafka) as producer:
        await producer.send_and_wait(
            DIGITS_ERASED.name, erasure.to_bytes(), key=str(erasure.digit_id).encode()
        )
    settings = Settings(**kafka.model_dump())
    await Consumers(settings, history, Health(), HistoryMetrics()).apply_erasure_ledger()

    row = await one_row(
        engine, "SELECT event_id FROM erasures WHERE digit_id = :d", d=erasure.digit_id
    )
    assert row["event_id"] == erasure.event_id
    drawing = submitted(digit_id=erasure.digit_id)
    await history.drawings([InputDrawing(drawing, bytes([1]) * 784, 1)])
    assert await stored_of(engine, [erasure.digit_id]) == {
        "drawings": 0,
        "predictions": 0,
        "labels": 0,
    }


# ---------------------------------------------------------------- rollouts


def rollout_start(version: int, mode: str = "canary", percent: float = 30.0) -> ModelRollout:
    candidate = promotion(f"rollout-{version}".encode(), version)
    return ModelRollout(
        rollout_id=uuid.uuid4(),
        action="started",
        mode=mode,  # type: ignore[arg-type]
        candidate=candidate.model,
        onnx_uri=candidate.onnx_uri,
        architecture="linear",
        champion_version=1,
        percent=100.0 if mode == "shadow" else percent,
        requested_by="ada",
        reason="try it",
    )


def reading(
    digit_id: uuid.UUID,
    version: int,
    digit: int,
    rollout_id: uuid.UUID,
    latency_ms: float,
    **kw: Any,
) -> DigitPredicted:
    model = promotion(f"rollout-{version}".encode(), version).model
    return prediction(
        digit_id,
        model,
        digit=digit,
        rollout_id=rollout_id,
        submitted_at=AT,
        occurred_at=AT + timedelta(milliseconds=latency_ms),
        **kw,
    )


def failure_letter(
    digit_id: uuid.UUID,
    version: int | None,
    rollout_id: uuid.UUID | None,
    answered_by: int | None = None,
) -> DeadLetter:
    return build_dead_letter(
        topic="digits.submitted",
        partition=0,
        offset=0,
        key=str(digit_id).encode(),
        value=b"{}",
        error="the model failed on this drawing: broken",
        service="inference-worker",
        model_version=version,
        rollout_id=rollout_id,
        answered_by=answered_by,
    )


@ORDERS
async def test_a_rollouts_course_and_figures_come_from_the_ledger_and_its_readings(
    database_url: str, s3_settings: S3Settings, bucket: str, reverse: bool
) -> None:
    """A canary's readings (one redelivered, slower), labels and an erasure, written in either
    order: each version's counts, accuracy and latency are the same, the erased drawing counts
    for nothing, and the ledger's abort ends the rollout with its reason."""
    async with own_database(database_url) as engine:
        writer = HistoryWriter(engine, ObjectStore(make_minio(s3_settings)), bucket)
        champion = promotion(b"rollout-1", 1)
        start = rollout_start(2)
        rid = start.rollout_id
        ids = [uuid.uuid4() for _ in range(7)]
        readings = [
            reading(ids[0], 1, 4, rid, 10),
            reading(ids[1], 1, 4, rid, 20),
            reading(ids[2], 1, 5, rid, 30),  # labeled 4: wrong
            reading(ids[3], 2, 4, rid, 40),
            reading(ids[4], 2, 4, rid, 50),
            reading(ids[5], 2, 4, rid, 60),
            reading(ids[5], 2, 4, rid, 900),  # the same reading redelivered later: the first counts
            reading(ids[6], 2, 7, rid, 70),  # erased
        ]
        labels = [DigitLabeled(digit_id=d, label=4, labeled_at=AT) for d in ids]
        erasure = [DigitErased(digit_id=ids[6], erased_at=AT, requested_by="it")]
        # The candidate failed on ids[1] (answered by the champion, redelivered) and on the
        # erased drawing; a letter of another rollout, one naming no model and one whose key
        # is not a drawing's count for nothing.
        failures = [
            failure_letter(ids[1], 2, rid, answered_by=1),
            failure_letter(ids[1], 2, rid, answered_by=1),
            failure_letter(ids[6], 2, rid),
            failure_letter(ids[0], 2, uuid.uuid4()),
            failure_letter(ids[0], None, None),
            failure_letter(ids[0], 2, rid).model_copy(update={"source_key": b"not-a-digit-id"}),
        ]
        writes: list[tuple[Callable[[Any], Awaitable[None]], Any]] = [
            (writer.ledger, [(champion, 0), (start, 1)]),
            *((writer.predictions, [r]) for r in readings),
            (writer.labels, labels),
            (writer.failures, failures),
            (writer.erasures, erasure),
        ]
        for write, batch in arriving(writes, reverse):
            await write(batch)

        async with engine.connect() as conn:
            [running] = await rollouts.rollouts(conn, rollouts.Evidence(min_labels=3))
        assert (running.rollout_id, running.state, running.mode, running.percent) == (
            rid,
            "running",
            "canary",
            30.0,
        )
        by_role = {v.role: v for v in running.versions}
        assert (by_role["champion"].readings, by_role["champion"].labeled) == (3, 3)
        assert (by_role["champion"].correct, by_role["candidate"].correct) == (2, 3)
        assert by_role["candidate"].readings == 3  # the erased drawing's reading is gone
        assert by_role["candidate"].latency_p99_ms == pytest.approx(59.8, abs=0.01)
        assert by_role["champion"].latency_p50_ms == pytest.approx(20.0)
        assert (by_role["candidate"].failed, by_role["candidate"].failure_rate) == (1, 0.25)
        assert (by_role["champion"].failed, by_role["champion"].failure_rate) == (0, 0.0)
        assert running.judged == "level" and running.verdict.startswith("no significant")

        abort = ModelRollout.model_validate(
            start.model_dump(exclude={"event_id", "occurred_at"})
            | {"action": "aborted", "requested_by": "history-service guardrail", "reason": "worse"}
        )
        await writer.ledger([(abort, 2), (abort, 2)])  # a redelivery stores it once
        async with engine.connect() as conn:
            [ended] = await rollouts.rollouts(conn)
        assert (ended.state, ended.ended_by, ended.end_reason) == (
            "aborted",
            "history-service guardrail",
            "worse",
        )


async def test_a_shadow_rollout_counts_agreement_and_a_promotion_completes_it(
    database_url: str, s3_settings: S3Settings, bucket: str
) -> None:
    async with own_database(database_url) as engine:
        writer = HistoryWriter(engine, ObjectStore(make_minio(s3_settings)), bucket)
        start = rollout_start(2, "shadow")
        rid = start.rollout_id
        await writer.ledger([(promotion(b"rollout-1", 1), 0), (start, 1)])
        ids = [uuid.uuid4() for _ in range(4)]
        await writer.drawings([InputDrawing(submitted(digit_id=ids[0]), bytes(784), 1)])
        await writer.predictions(
            [reading(d, 1, 3, rid, 10) for d in ids]
            + [reading(d, 2, 3 if i < 3 else 8, rid, 15, kind="shadow") for i, d in enumerate(ids)]
        )
        await writer.ledger([(promotion(b"rollout-2", 2, previous=1), 2)])

        async with engine.connect() as conn:
            [done] = await rollouts.rollouts(conn)
            shown = await queries.drawing(conn, ids[0])
        assert (done.state, done.compared, done.agreement) == ("completed", 4, 0.75)
        assert {v.role: v.readings for v in done.versions} == {"champion": 4, "candidate": 4}
        assert {v.role: v.answered for v in done.versions} == {"champion": 4, "candidate": 0}
        assert shown is not None
        assert {(p["model_version"], p["kind"]) for p in shown["predictions"]} == {
            (1, "live"),
            (2, "shadow"),
        }
