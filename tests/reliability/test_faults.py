"""Faults while uploads flow: crashes, a broker restart, storage outages. Nothing may be lost.

Each test keeps uploads flowing at a steady rate through the fault and a while after it, then
audits the stores: every upload answered 202 has its row in Postgres, its image in MinIO and
a live prediction by the champion. The counts are printed and summarised at the end.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from mnistream_common.events import ModelPromoted
from mnistream_common.kafka import client_options, read_ledger_entries
from mnistream_common.ledger import fold
from mnistream_common.settings import S3Settings
from mnistream_common.storage import make_minio
from mnistream_common.topics import MODEL_PROMOTED

from tests.e2e.support import (
    Models,
    Predictions,
    mnistream,
    stack_component,
    worker_rollouts,
    worker_versions,
)
from tests.helpers import SEVEN, drawing_png, promotion, tiny_onnx_model
from tests.polling import eventually
from tests.reliability.support import assert_nothing_lost, flowing, serving_version
from tests.stack import require_kafka
from tests.system import System

# A rescore job covers every stored drawing, so it grows with the stack's history.
pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.timeout(600)]

RATE = 40.0  # uploads per second: steady, and modest for a 2-core machine
OUTAGE_S = 10.0
KAFKA_DOWN_S = 45.0


async def champion(system: System) -> int:
    """The version the ledger says is serving."""
    return await serving_version(system.gateway_url)


@pytest.mark.parametrize(
    ("service", "fault"),
    [
        # The other worker takes over its partitions.
        ("inference-0", "kill -9 inference worker"),
        # Uploads do not need the history to be accepted; it catches up on restart.
        ("history", "kill -9 history-service"),
    ],
    ids=["inference-worker", "history-service"],
)
async def test_kill_9_of_a_service(
    system: System, drawings: list[bytes], predictions: Predictions, service: str, fault: str
) -> None:
    started, version = time.monotonic(), await champion(system)
    async with flowing(system.gateway_url, drawings, RATE) as traffic:
        system.services[service].kill()
        await traffic.until_accepted(200)
        await asyncio.to_thread(system.restart, service)
        await traffic.until_accepted(100)
    assert not traffic.refused, traffic.refused
    await assert_nothing_lost(fault, traffic, predictions, [version], started=started)


async def test_kill_9_of_a_rescore_worker_during_a_rescore_job(
    system: System, models: Models, drawings: list[bytes], predictions: Predictions
) -> None:
    started, old = time.monotonic(), await champion(system)
    new = models.better if old == models.weak else models.weak
    async with flowing(system.gateway_url, drawings, RATE) as traffic:
        await asyncio.to_thread(mnistream, "promote", str(new), "--force", "--reason", "chaos")
        job = await _running_job(system, new)
        system.services["rescore-0"].kill()  # mid-job: its chunk in hand is redelivered
        await traffic.until_accepted(100)
        await asyncio.to_thread(system.restart, "rescore-0")

        async def swapped_everywhere() -> bool:
            return await worker_versions(system) == {new}

        await eventually(swapped_everywhere, 60, "every worker serves the new one")
        swapped = len(traffic.accepted)
        await traffic.until_accepted(50)
    assert not traffic.refused, traffic.refused
    # Uploads before and after the swap: each is predicted live by the champion of its moment
    # (either one around the promotion, a backlog may be read after the swap) ...
    await assert_nothing_lost(
        f"kill -9 rescore worker (job {str(job)[:8]})",
        traffic,
        predictions,
        [old, new],
        started=started,
    )
    # ... and every upload accepted once all the workers had swapped, by the new one only.
    after = traffic.accepted[swapped:]
    stale = [
        d
        for d in after
        for p in predictions.by_digit[d]
        if p.kind == "live" and p.model.version != new
    ]
    assert len(after) >= 50 and not stale, f"{len(stale)} of {len(after)} read by the old model"

    async def job_done() -> bool:
        async with httpx.AsyncClient(base_url=system.gateway_url, timeout=10) as client:
            body = (await client.get(f"/api/rescore-jobs/{job}")).json()
        return bool(body["finished"]) and body["done"] == body["total"]

    await eventually(job_done, 400, "the rescore job finished despite the kill")


async def _running_job(system: System, version: int) -> uuid.UUID:
    """Wait for the rescore job of `version` to start, and return its id while it runs."""
    found: list[uuid.UUID] = []

    async def started() -> bool:
        async with httpx.AsyncClient(base_url=system.gateway_url, timeout=10) as client:
            jobs = (await client.get("/api/rescore-jobs", params={"active": True})).json()
        mine = [j for j in jobs if j["model_version"] == version and j["kind"] == "rescore"]
        found[:] = [uuid.UUID(j["job_id"]) for j in mine if 0 < j["done"] < j["total"]]
        return bool(found)

    await eventually(started, 120, f"a rescore job for v{version} running", interval=0.05)
    return found[0]


async def test_a_kafka_broker_restart(
    system: System, drawings: list[bytes], predictions: Predictions
) -> None:
    started, version = time.monotonic(), await champion(system)
    async with flowing(system.gateway_url, drawings, RATE) as traffic:
        await asyncio.to_thread(stack_component, "stop", "kafka")
        # Down longer than a produce request's timeout (40 s): unsent batches expire, which
        # once left every producer out of sequence for good. Uploads are refused, not lost.
        await asyncio.sleep(KAFKA_DOWN_S)
        await asyncio.to_thread(stack_component, "start", "kafka")
        await traffic.until_accepted(300, within=180)  # every service reconnected
    # While the broker was down the gateway answered 503 (nothing accepted), never a 500.
    assert set(traffic.refused) <= {"503"}, traffic.refused
    await assert_nothing_lost(
        "Kafka broker restart", traffic, predictions, [version], started=started
    )
    system.inference_ready()


@pytest.mark.parametrize(
    ("component", "fault"),
    [("postgres", "PostgreSQL stopped 10 s"), ("minio", "MinIO stopped 10 s")],
    ids=["postgres", "minio"],
)
async def test_a_storage_outage_of_10_s(
    system: System, drawings: list[bytes], predictions: Predictions, component: str, fault: str
) -> None:
    started, version = time.monotonic(), await champion(system)
    async with flowing(system.gateway_url, drawings, RATE) as traffic:
        await asyncio.to_thread(stack_component, "stop", component)
        try:
            await asyncio.sleep(OUTAGE_S)
        finally:
            await asyncio.to_thread(stack_component, "start", component)
        await traffic.until_accepted(100)
    assert not traffic.refused, traffic.refused
    await assert_nothing_lost(fault, traffic, predictions, [version], started=started)


async def test_workers_restarted_after_an_unloadable_promotion_serve_the_champion_before(
    system: System, models: Models, drawings: list[bytes]
) -> None:
    """A promotion whose ONNX object does not exist, then every inference worker killed and
    restarted: each serves the newest champion that loads and says so in /readyz."""
    old = await champion(system)
    unloadable = promotion(b"never stored", version=old + 1000, previous=old)
    await publish_promotion(unloadable)
    try:
        await eventually(
            lambda: _fallbacks_name(system, old + 1000), 60, "every worker reporting the fallback"
        )
        workers = [name for name in system.services if name.startswith("inference-")]
        for name in workers:
            system.services[name].kill()
        for name in workers:
            await asyncio.to_thread(system.restart, name)
        await eventually(
            lambda: _fallbacks_name(system, old + 1000), 60, "the restarted workers falling back"
        )
        assert await worker_versions(system) == {old}
        async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
            answer = await client.post(
                "/api/predictions",
                params={"wait": 5000},
                files={"image": ("digit.png", drawings[0], "image/png")},
            )
        assert answer.status_code == 200, answer.text
        assert answer.json()["prediction"]["model"]["version"] == old
    finally:
        # The ledger's newest is a good champion again, for the tests after this one.
        await asyncio.to_thread(
            mnistream, "promote", str(old), "--force", "--reason", "chaos: restore the champion"
        )
        await eventually(lambda: _fallbacks_name(system, None), 120, "the fallback over")


async def test_a_promotion_the_registry_does_not_vouch_for_is_refused_by_every_worker(
    system: System, models: Models, s3_settings: S3Settings
) -> None:
    """A forged promotion, as someone with write access to Kafka and the artifacts bucket
    could make it: a loadable model of their own stored in the bucket, its true sha256 in the
    event, under a registered version's number. Every worker refuses it (the registry holds
    that version with another sha256) and the champion keeps answering uploads."""
    old = await champion(system)
    forged_version = models.better if old != models.better else models.weak
    forged_bytes = tiny_onnx_model(4242)
    key = f"forged/v{forged_version}.onnx"
    make_minio(s3_settings).put_object(
        s3_settings.artifacts_bucket, key, io.BytesIO(forged_bytes), len(forged_bytes)
    )
    forged = promotion(forged_bytes, version=forged_version, previous=old).model_copy(
        update={"onnx_uri": f"s3://{s3_settings.artifacts_bucket}/{key}"}
    )
    await publish_promotion(forged)
    try:
        await eventually(
            lambda: _workers_refused(system, "refused as forged"), 60, "every worker refusing"
        )
        assert await worker_versions(system) == {old}
        async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
            answer = await client.post(
                "/api/predictions",
                params={"wait": 5000},
                files={"image": ("digit.png", drawing_png(SEVEN), "image/png")},
            )
        assert answer.status_code == 200, answer.text
        model = answer.json()["prediction"]["model"]
        assert model["version"] == old and model["sha256"] != forged.model.sha256, model
    finally:
        await asyncio.to_thread(
            mnistream, "promote", str(old), "--force", "--reason", "chaos: after a forgery"
        )
        await eventually(lambda: _fallbacks_name(system, None), 120, "the fallback over")


async def _workers_refused(system: System, reason: str) -> bool:
    """Every running inference worker's last error says `reason`."""
    async with httpx.AsyncClient(timeout=5) as client:
        errors = [
            (await client.get(f"http://127.0.0.1:{s.env['INFERENCE_HTTP_PORT']}/readyz")).json()[
                "last_error"
            ]
            for name, s in system.services.items()
            if name.startswith("inference-") and s.running
        ]
    return bool(errors) and all(reason in (e or "") for e in errors)


async def publish_promotion(event: ModelPromoted) -> None:
    """Write a promotion straight to the ledger, as anyone with Kafka access can today."""
    producer = AIOKafkaProducer(**client_options(require_kafka()), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            MODEL_PROMOTED.name, event.to_bytes(), key=event.model.name.encode()
        )
    finally:
        await producer.stop()


async def _fallbacks_name(system: System, rejected: int | None) -> bool:
    """Every running inference worker reports a fallback from v`rejected` (None: no fallback)."""
    reports = []
    async with httpx.AsyncClient(timeout=5) as client:
        for name, service in system.services.items():
            if name.startswith("inference-") and service.running:
                port = service.env["INFERENCE_HTTP_PORT"]
                reports.append((await client.get(f"http://127.0.0.1:{port}/readyz")).json())
    if rejected is None:
        return all(r["fallback"] is None for r in reports)
    return bool(reports) and all(f"v{rejected}," in (r["fallback"] or "") for r in reports)


async def test_kill_9_of_an_inference_worker_during_a_canary(
    system: System, models: Models, drawings: list[bytes], predictions: Predictions
) -> None:
    """Nothing is lost, every drawing (a redelivered one too) is answered by the version its
    id routes to, and the restarted worker resumes the canary from the ledger."""
    started, old = time.monotonic(), await champion(system)
    new = models.better if old == models.weak else models.weak
    mnistream("canary", str(new), "--percent", "30", "--force", "--reason", "chaos: canary")
    try:
        rollout = fold(await read_ledger_entries(require_kafka())).rollout
        assert rollout is not None
        applied = (str(rollout.rollout_id), True)

        async def every_worker_applies() -> bool:
            return set(await worker_rollouts(system)) == {applied}

        await eventually(every_worker_applies, 60, "every worker holding the candidate")
        async with flowing(system.gateway_url, drawings, RATE) as traffic:
            system.services["inference-0"].kill()
            await traffic.until_accepted(200)
            await asyncio.to_thread(system.restart, "inference-0")
            await eventually(every_worker_applies, 60, "the restarted worker back in the canary")
            await traffic.until_accepted(100)
        assert not traffic.refused, traffic.refused
        await assert_nothing_lost(
            "kill -9 inference worker during a canary",
            traffic,
            predictions,
            [old, new],
            started=started,
        )
        routed = {new if rollout.candidate_answers(d) else old for d in traffic.accepted}
        assert routed == {old, new}
        for digit_id in traffic.accepted:
            expected = new if rollout.candidate_answers(digit_id) else old
            assert predictions.versions(digit_id, "live") == {expected}, digit_id
    finally:
        mnistream("abort", "--reason", "chaos: end of test", check=False)
