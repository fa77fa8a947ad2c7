"""Erasure end to end: an operator erases a drawing with the CLI, and it is gone from the API,
PostgreSQL and MinIO, its record in digits.submitted is marked for compaction, and a replay from
the beginning into an emptied database does not bring it back."""

from __future__ import annotations

import asyncio
import subprocess
import uuid

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from mnistream_common.kafka import client_options
from mnistream_common.storage import drawing_key, make_minio
from mnistream_common.topics import DIGITS_SUBMITTED
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.e2e.support import (
    everything_settled,
    history_caught_up,
    mnistream,
    topic_records,
    upload_all,
)
from tests.e2e.test_history import figures_unlike_their_recomputation
from tests.polling import eventually
from tests.stack import require_kafka, require_minio, require_postgres
from tests.system import ADMIN_TOKEN, BIN, System

pytestmark = pytest.mark.e2e

TOKEN = {"ADMIN_TOKEN": ADMIN_TOKEN}


async def rows_of(digit_id: uuid.UUID) -> dict[str, int]:
    """How many rows each history table holds for one drawing."""
    engine = create_async_engine(require_postgres())
    counts: dict[str, int] = {}
    try:
        async with engine.connect() as connection:
            for table in ("drawings", "predictions", "labels", "erasures"):
                query = text(f"SELECT count(*) FROM {table} WHERE digit_id = :d")
                counts[table] = (await connection.execute(query, {"d": digit_id})).scalar_one()
    finally:
        await engine.dispose()
    return counts


def has_object(digit_id: uuid.UUID) -> bool:
    settings = require_minio()
    names = {
        o.object_name
        for o in make_minio(settings).list_objects(
            settings.drawings_bucket, prefix=drawing_key(digit_id), recursive=True
        )
    }
    return drawing_key(digit_id) in names


async def answers(url: str, path: str) -> int:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        return (await client.get(path)).status_code


async def cleanup_policy() -> str:
    admin = AIOKafkaAdminClient(**client_options(require_kafka()))
    await admin.start()
    try:
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, DIGITS_SUBMITTED.name)]
        )
        entries = {entry[0]: entry[1] for entry in response.resources[0][4]}
        return str(entries["cleanup.policy"])
    finally:
        await admin.close()


async def gone_everywhere(system: System, digit_id: uuid.UUID) -> bool:
    rows = await rows_of(digit_id)
    return (
        rows == {"drawings": 0, "predictions": 0, "labels": 0, "erasures": 1}
        and not has_object(digit_id)
        and await answers(system.gateway_url, f"/api/digits/{digit_id}") == 404
        and await answers(system.gateway_url, f"/api/digits/{digit_id}/image") == 404
    )


async def test_an_erased_drawing_is_gone_everywhere_and_a_replay_does_not_bring_it_back(
    system: System, drawings: list[bytes]
) -> None:
    kept, erased = await upload_all(system.gateway_url, drawings[:2], wait_ms=5000)
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=10) as client:
        for digit_id in (kept, erased):
            labeled = await client.post(f"/api/digits/{digit_id}/label", json={"label": 4})
            assert labeled.status_code == 202, labeled.text

    async def stored_with_label() -> bool:
        return all([(await rows_of(d))["labels"] == 1 for d in (kept, erased)])

    await eventually(stored_with_label, 60, "both drawings stored and labelled")
    await eventually(everything_settled, 180, "rescores done and history caught up")
    assert has_object(erased)
    assert (await rows_of(erased))["predictions"] >= 1

    # Irreversible, so asked twice; an admin action, so refused without the token.
    unconfirmed = mnistream("erase", str(erased), check=False, env=TOKEN)
    assert unconfirmed.returncode == 1 and "--yes" in unconfirmed.stdout, unconfirmed.stdout
    untokened = mnistream("erase", str(erased), "--yes", check=False, env={"ADMIN_TOKEN": ""})
    assert untokened.returncode == 1 and "ADMIN_TOKEN" in untokened.stdout, untokened.stdout
    unknown = uuid.uuid4()
    typo = mnistream("erase", str(unknown), "--yes", check=False, env=TOKEN)
    assert typo.returncode == 1 and "(404)" in typo.stdout, typo.stdout
    assert (await rows_of(unknown))["erasures"] == 0
    assert (await rows_of(erased))["drawings"] == 1, "nothing was erased by the refused runs"

    done = mnistream("erase", str(erased), "--yes", "--reason", "request 42", env=TOKEN)
    assert f"{erased} erased" in done.stdout, done.stdout
    await eventually(lambda: gone_everywhere(system, erased), 30, "the drawing gone everywhere")
    left = await rows_of(kept)
    assert (left["drawings"], left["labels"], left["erasures"]) == (1, 1, 0), left
    assert left["predictions"] >= 1, left
    assert await figures_unlike_their_recomputation() == []
    again = mnistream("erase", str(erased), "--yes", env=TOKEN)
    assert "already erased" in again.stdout, again.stdout

    # The log: its record is followed by a tombstone, which compaction turns into its removal.
    values = await topic_records(DIGITS_SUBMITTED, str(erased).encode())
    assert values[0] is not None and values[-1] is None, [v and v[:40] for v in values]
    assert await cleanup_policy() == "compact"

    # A replay from the beginning into an emptied database and bucket: the submission is still
    # in the log (compaction runs within a day, not now), and is not stored again.
    system.services["history"].stop()
    await asyncio.to_thread(
        subprocess.run, [str(BIN / "history-service"), "reset", "--yes", "--objects"], check=True
    )
    system.restart("history")
    mnistream("replay", "history", "--from-beginning", env=TOKEN)
    await eventually(history_caught_up, 180, "history rebuilt from the topics")
    assert await gone_everywhere(system, erased)
    assert (await rows_of(kept))["drawings"] == 1 and has_object(kept)
    assert await figures_unlike_their_recomputation() == []
