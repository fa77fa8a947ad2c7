"""The history end to end: stored, idempotent, order-tolerant, outage-proof and rebuildable."""

from __future__ import annotations

import asyncio
import hashlib
import re
import subprocess
import time
import uuid
from collections.abc import Sequence

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from history_service import figures
from mnistream_common.events import (
    DigitLabeled,
    DigitPredicted,
    DigitSubmitted,
    Event,
    ModelRef,
    utc_now,
)
from mnistream_common.kafka import client_options
from mnistream_common.storage import make_minio
from mnistream_common.topics import DIGITS_LABELED, DIGITS_PREDICTED, DIGITS_SUBMITTED
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests import helpers
from tests.e2e.support import (
    Predictions,
    everything_settled,
    history_caught_up,
    mnistream,
    stack_component,
    upload_all,
)
from tests.helpers import prediction
from tests.polling import eventually
from tests.stack import require_kafka, require_minio, require_postgres
from tests.system import ADMIN_TOKEN, BIN, System

pytestmark = pytest.mark.e2e

TOKEN = {"ADMIN_TOKEN": ADMIN_TOKEN}
NO_TOKEN = {"ADMIN_TOKEN": ""}
WRONG_TOKEN = {"ADMIN_TOKEN": "not-the-admin-token"}
TABLES = {
    "drawings": "digit_id",
    "predictions": "digit_id, model_version",
    "labels": "digit_id",
    "promotions": "event_id",
    "rescore_jobs": "job_id",
    "rescore_job_items": "job_id, digit_id",
    "version_counts": "model_version, kind",
    "version_labels": "model_version",
    "version_pairs": "model_version, other_version, other_digit, digit",
    "prediction_flips": "model_version, other_version, digit_id",
    "erasures": "digit_id",
}


async def stored(history_url: str, digit_id: uuid.UUID) -> dict[str, object] | None:
    """The drawing as the read API returns it, or None while it is not stored."""
    async with httpx.AsyncClient(base_url=history_url, timeout=10) as client:
        response = await client.get(f"/api/digits/{digit_id}")
    return response.json() if response.status_code == 200 else None


async def table_checksums(where_ids: Sequence[uuid.UUID] | None = None) -> dict[str, str]:
    """md5 of every history table's rows in key order (optionally only some digit ids)."""
    engine = create_async_engine(require_postgres())
    sums: dict[str, str] = {}
    try:
        async with engine.connect() as conn:
            for table, key in TABLES.items():
                where = ""
                if where_ids is not None:
                    if "digit_id" not in key:
                        continue
                    where = "WHERE digit_id = ANY(:ids)"
                query = text(
                    f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY {key}), '')) "
                    f"FROM {table} t {where}"
                )
                params = {"ids": list(where_ids)} if where_ids is not None else {}
                count, digest = (await conn.execute(query, params)).one()
                sums[table] = f"{count}:{digest}"
    finally:
        await engine.dispose()
    return sums


async def table_rows(table: str) -> list[str]:
    """Every row of one history table as text, in key order (to show what a checksum hides)."""
    engine = create_async_engine(require_postgres())
    try:
        async with engine.connect() as conn:
            query = text(f"SELECT t::text FROM {table} t ORDER BY {TABLES[table]}")
            return [row for (row,) in await conn.execute(query)]
    finally:
        await engine.dispose()


async def figures_unlike_their_recomputation() -> list[str]:
    """The figure tables whose kept rows differ from a recomputation from the rows."""
    engine = create_async_engine(require_postgres())
    unlike = []
    try:
        async with engine.connect() as conn:
            for table, (_, recompute) in figures.RECOMPUTE.items():
                kept = {tuple(r) for r in await conn.execute(text(figures.maintained(table)))}
                if kept != {tuple(r) for r in await conn.execute(text(recompute))}:
                    unlike.append(table)
    finally:
        await engine.dispose()
    return unlike


def object_checksum() -> str:
    """Digest of every drawing object's name and content hash."""
    settings = require_minio()
    client = make_minio(settings)
    listing = sorted(
        (o.object_name or "", o.etag or "")
        for o in client.list_objects(settings.drawings_bucket, recursive=True)
    )
    return f"{len(listing)}:{hashlib.sha256(repr(listing).encode()).hexdigest()}"


async def publish(events: Sequence[tuple[str, Event, uuid.UUID]]) -> None:
    """Publish events keyed by digit id, acks=all."""
    producer = AIOKafkaProducer(
        **client_options(require_kafka()), acks="all", max_request_size=3_000_000
    )
    await producer.start()
    try:
        for topic, event, key in events:
            await producer.send_and_wait(topic, event.to_bytes(), key=str(key).encode())
    finally:
        await producer.stop()


def made_up_events(image: bytes) -> tuple[uuid.UUID, DigitSubmitted, DigitPredicted, DigitLabeled]:
    """A drawing, a prediction and a label for a new id, produced by no service."""
    digit_id = uuid.uuid4()
    submitted = helpers.submitted(image, digit_id=digit_id)
    predicted = prediction(
        digit_id,
        ModelRef(name="e2e", version=999, sha256="0" * 64),
        digit=3,
        confidence=0.1,
        worker_id="e2e",
        submitted_at=submitted.submitted_at,
    )
    labeled = DigitLabeled(digit_id=digit_id, label=3, labeled_at=utc_now())
    return digit_id, submitted, predicted, labeled


async def test_upload_is_stored_with_its_prediction_and_exact_image(
    system: System, drawings: list[bytes]
) -> None:
    [digit_id] = await upload_all(system.gateway_url, drawings[10:11], wait_ms=5000)

    async def has_prediction() -> bool:
        row = await stored(system.gateway_url, digit_id)  # through the gateway, as browsers do
        return bool(row and row["predictions"])

    await eventually(has_prediction, 30, "drawing stored with its prediction")
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=10) as client:
        image = await client.get(f"/api/digits/{digit_id}/image")
        model_input = await client.get(f"/api/digits/{digit_id}/input.png")
    assert image.content == drawings[10], "the stored image must be byte-identical"
    assert image.headers["content-type"] == "image/png"
    assert model_input.status_code == 200 and model_input.content.startswith(b"\x89PNG")


async def test_the_same_events_twice_give_the_same_rows(
    system: System, drawings: list[bytes], predictions: Predictions
) -> None:
    made = [made_up_events(drawings[i]) for i in range(5)]
    events = [
        (topic, event, digit_id)
        for digit_id, submitted, predicted, labeled in made
        for topic, event in (
            (DIGITS_SUBMITTED.name, submitted),
            (DIGITS_PREDICTED.name, predicted),
            (DIGITS_LABELED.name, labeled),
        )
    ]
    ids = [m[0] for m in made]

    def live_predictions(count: int) -> bool:
        return all(
            sum(p.kind == "live" and p.worker_id != "e2e" for p in predictions.by_digit[d]) >= count
            for d in ids
        )

    await publish(events)
    # The workers read the published drawings too: wait for their answers to be stored.
    await eventually(lambda: live_predictions(1), 60, "the workers read the drawings")
    # Settled: a rescore running meanwhile would add rows for these drawings between snapshots.
    await eventually(everything_settled, 180, "rescores done and history caught up")
    first = await table_checksums(ids)
    assert first["drawings"].startswith("5:")
    assert first["predictions"].startswith("10:")  # the made-up v999 and the champion's
    assert first["labels"].startswith("5:")
    await publish(events)  # redelivery: every event a second time
    await eventually(lambda: live_predictions(2), 60, "the workers read them again")
    await eventually(everything_settled, 180, "history caught up again")
    assert await table_checksums(ids) == first


async def test_prediction_and_label_before_the_drawing_are_kept_and_joined(
    system: System, drawings: list[bytes]
) -> None:
    digit_id, submitted, predicted, labeled = made_up_events(drawings[3])
    await publish(
        [(DIGITS_PREDICTED.name, predicted, digit_id), (DIGITS_LABELED.name, labeled, digit_id)]
    )
    await eventually(history_caught_up, 60, "history caught up")
    assert await stored(system.history_url, digit_id) is None  # no drawing yet, nothing failed
    await publish([(DIGITS_SUBMITTED.name, submitted, digit_id)])

    async def joined() -> bool:
        row = await stored(system.history_url, digit_id)
        return bool(row and row["predictions"] and row["label"] == 3)

    await eventually(joined, 30, "the early prediction and label joined the drawing")


async def test_postgres_outage_loses_nothing(
    system: System, drawings: list[bytes], predictions: Predictions
) -> None:
    stream = asyncio.create_task(
        upload_all(system.gateway_url, [drawings[i % 300] for i in range(300)], concurrency=4)
    )
    await eventually(lambda: len(predictions.by_digit) >= 30, 60, "stream flowing")
    await asyncio.to_thread(stack_component, "stop", "postgres")
    try:

        async def not_ready() -> bool:
            async with httpx.AsyncClient(timeout=5) as client:
                return (await client.get(f"{system.history_url}/readyz")).status_code == 503

        await eventually(not_ready, 30, "history-service reports not-ready during the outage")
        await asyncio.sleep(5)  # the outage itself: 5 s of uploads with Postgres down
    finally:
        await asyncio.to_thread(stack_component, "start", "postgres")
    ids = await stream

    async def all_stored() -> bool:
        engine = create_async_engine(require_postgres())
        try:
            async with engine.connect() as conn:
                found = await conn.execute(
                    text(
                        "SELECT count(DISTINCT d.digit_id) FROM drawings d "
                        "JOIN predictions p ON p.digit_id = d.digit_id WHERE d.digit_id = ANY(:ids)"
                    ),
                    {"ids": ids},
                )
                return int(found.scalar_one()) == len(set(ids))
        finally:
            await engine.dispose()

    await eventually(all_stored, 120, "every upload stored with its prediction")


async def test_replay_into_an_empty_database_gives_identical_rows(
    system: System, drawings: list[bytes]
) -> None:
    await upload_all(system.gateway_url, drawings[:20], wait_ms=5000)
    await eventually(everything_settled, 180, "rescores done and history caught up")
    before, objects = await table_checksums(), object_checksum()
    small = {t: await table_rows(t) for t in ("promotions", "rescore_jobs")}
    # A replay is an admin action: without the token, or with a wrong one, nothing happens.
    untokened = mnistream("replay", "history", "--from-beginning", check=False, env=NO_TOKEN)
    assert untokened.returncode == 1 and "ADMIN_TOKEN" in untokened.stdout
    wrong = mnistream("replay", "history", "--from-beginning", check=False, env=WRONG_TOKEN)
    assert wrong.returncode == 1 and "(401)" in wrong.stdout, wrong.stdout
    system.services["history"].stop()
    await asyncio.to_thread(
        subprocess.run, [str(BIN / "history-service"), "reset", "--yes", "--objects"], check=True
    )
    empty = await table_checksums()
    assert empty["drawings"].startswith("0:")
    assert object_checksum().startswith("0:"), "the replay must put every image back"
    system.restart("history")  # an empty database, consuming from where the group had got
    started = time.monotonic()
    rewound = mnistream("replay", "history", "--from-beginning", env=TOKEN)
    records = int(re.search(r"history rewound: (\d+) records", rewound.stdout)[1])  # type: ignore[index]
    await eventually(history_caught_up, 180, "history rebuilt from the topics")
    seconds = time.monotonic() - started
    print(f"replay: {records} records in {seconds:.1f} s ({records / seconds:.0f} events/s)")
    after = await table_checksums()
    differing = {t: (small.get(t), await table_rows(t)) for t in after if after[t] != before[t]}
    assert after == before, differing
    assert object_checksum() == objects
    # Replayed topic by topic, the rows arrived in another order than live: the figures kept up
    # as they were written are still those the rows add up to.
    assert await figures_unlike_their_recomputation() == []


async def test_pagination_is_stable_while_new_drawings_arrive(
    system: System, drawings: list[bytes]
) -> None:
    await upload_all(system.gateway_url, drawings[:12], wait_ms=5000)
    await eventually(history_caught_up, 60, "history caught up")
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=10) as client:
        first = (await client.get("/api/digits", params={"limit": 10})).json()
        newer = await upload_all(system.gateway_url, drawings[20:25], wait_ms=5000)
        await eventually(history_caught_up, 60, "new drawings stored")
        second = (
            await client.get("/api/digits", params={"limit": 10, "before": first["next_cursor"]})
        ).json()
        fresh = (await client.get("/api/digits", params={"limit": 5})).json()
    first_ids = [item["digit_id"] for item in first["items"]]
    second_ids = [item["digit_id"] for item in second["items"]]
    assert len(first_ids) == 10 and second_ids, "two full pages expected"
    assert not set(first_ids) & set(second_ids), "no drawing may appear on two pages"
    first_times = [item["submitted_at"] for item in first["items"]]
    second_times = [item["submitted_at"] for item in second["items"]]
    assert max(second_times) <= min(first_times), "page two continues with older drawings"
    assert first_times == sorted(first_times, reverse=True), "newest first"
    assert {str(d) for d in newer} == {item["digit_id"] for item in fresh["items"]}
