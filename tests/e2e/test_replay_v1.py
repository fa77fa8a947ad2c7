"""Events already in the topics keep replaying to the same state after a contract changes.

tests/data/v1-events.jsonl holds schema v1 records exactly as the code of commit d124558 wrote
them (12 drawings, their predictions by a made-up model v998, 3 labels), and
tests/data/v1-rows.json the rows that code's history-service stored for them. Published again
into the topics, they must give the same rows, column for column, whatever the code is now.
`MNISTREAM_RECORD_V1_ROWS=1` rewrites the rows file (only ever with the v1 code).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from mnistream_common.kafka import client_options
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.polling import eventually
from tests.stack import require_kafka, require_postgres
from tests.system import System

pytestmark = pytest.mark.e2e

DATA = Path(__file__).resolve().parents[1] / "data"
LOG = DATA / "v1-events.jsonl"
ROWS = DATA / "v1-rows.json"
VERSION = 998
# The columns the v1 code wrote: the comparison holds them to what that code stored.
COLUMNS = {
    "drawings": (
        "digit_id, submitted_at, media_type, width, height, size_bytes, image_bucket, image_key, "
        "image_sha256, client_source, event_id"
    ),
    "predictions": (
        "digit_id, model_version, model_name, model_sha256, predicted_digit, confidence, "
        "probabilities, kind, kind_rank, job_id, worker_id, provider, timings, predicted_at, "
        "event_id"
    ),
    "labels": "digit_id, label, labeled_at, event_id",
}
WHERE = {
    "drawings": "digit_id = ANY(:ids)",
    "predictions": f"digit_id = ANY(:ids) AND model_version = {VERSION}",
    "labels": "digit_id = ANY(:ids)",
}


def v1_records() -> list[dict[str, str]]:
    """The committed v1 records: topic, key and value as the old code produced them."""
    return [json.loads(line) for line in LOG.read_text().splitlines() if line]


async def publish_raw(records: list[dict[str, str]]) -> None:
    """Publish the records byte for byte (no event model in between)."""
    producer = AIOKafkaProducer(
        **client_options(require_kafka()), acks="all", max_request_size=3_000_000
    )
    await producer.start()
    try:
        for record in records:
            await producer.send_and_wait(
                record["topic"], record["value"].encode(), key=record["key"].encode()
            )
    finally:
        await producer.stop()


async def stored_rows(ids: list[uuid.UUID]) -> dict[str, list[dict[str, Any]]]:
    """The rows of the log's drawings, in the v1 columns, in key order."""
    engine = create_async_engine(require_postgres())
    rows: dict[str, list[dict[str, Any]]] = {}
    try:
        async with engine.connect() as conn:
            for table, columns in COLUMNS.items():
                query = text(
                    f"SELECT row_to_json(t)::text FROM (SELECT {columns} FROM {table} "
                    f"WHERE {WHERE[table]} ORDER BY digit_id) t"
                )
                result = await conn.execute(query, {"ids": ids})
                rows[table] = [json.loads(row) for (row,) in result]
    finally:
        await engine.dispose()
    return rows


async def test_a_v1_event_log_replays_to_the_rows_the_v1_code_stored(system: System) -> None:
    records = v1_records()
    ids = sorted({uuid.UUID(r["key"]) for r in records})
    labels = sum(r["topic"] == "digits.labeled" for r in records)

    await publish_raw(records)

    async def all_stored() -> dict[str, list[dict[str, Any]]] | None:
        rows = await stored_rows(ids)
        counts = [len(rows["drawings"]), len(rows["predictions"]), len(rows["labels"])]
        return rows if counts == [len(ids), len(ids), labels] else None

    rows = await eventually(all_stored, 60, "every v1 drawing, prediction and label stored")
    if os.environ.get("MNISTREAM_RECORD_V1_ROWS"):
        ROWS.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    assert rows == json.loads(ROWS.read_text())
