"""Live inference end to end: uploads through the gateway, predictions from the workers."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import uuid

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from mnistream_common.events import DeadLetter, DigitSubmitted, utc_now
from mnistream_common.kafka import client_options
from mnistream_common.topics import DIGITS_DEADLETTER, DIGITS_SUBMITTED
from PIL import Image

from tests.e2e.support import Models, Predictions, mnistream, upload_all
from tests.polling import eventually
from tests.stack import require_kafka
from tests.system import System

pytestmark = pytest.mark.e2e


async def test_upload_is_predicted_and_wait_answers_with_it(
    system: System, drawings: list[bytes], predictions: Predictions
) -> None:
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=10) as client:
        waited = await client.post(
            "/api/predictions", params={"wait": 5000}, files={"image": ("7.png", drawings[0])}
        )
        plain = await client.post(
            "/api/predictions", content=drawings[1], headers={"content-type": "image/png"}
        )
    assert waited.status_code == 200, waited.text
    answer = waited.json()
    assert answer["status"] == "predicted"
    assert answer["prediction"]["kind"] == "live"
    assert 0 <= answer["prediction"]["predicted_digit"] <= 9
    assert abs(sum(answer["prediction"]["probabilities"]) - 1) < 1e-3
    assert plain.status_code == 202
    accepted = plain.json()
    assert uuid.UUID(accepted["digit_id"]).version == 7
    assert accepted["result_url"] == f"/api/digits/{accepted['digit_id']}"
    ids = [uuid.UUID(answer["digit_id"]), uuid.UUID(accepted["digit_id"])]
    await eventually(lambda: not predictions.missing(ids), 30, "both uploads predicted")


async def test_each_service_logs_the_digit_id_in_json(
    system: System, drawings: list[bytes], predictions: Predictions
) -> None:
    [digit_id] = await upload_all(system.gateway_url, drawings[5:6], wait_ms=5000)
    await eventually(lambda: not predictions.missing([digit_id]), 30, "predicted")

    def logged_by(prefix: str) -> bool:
        for name, service in system.services.items():
            if not name.startswith(prefix) or not service.log_path.exists():
                continue
            for line in service.log_path.read_text(errors="replace").splitlines():
                if str(digit_id) in line and line.startswith("{"):
                    entry = json.loads(line)
                    return str(digit_id) in (entry.get("digit_id"), *entry.get("digit_ids", ()))
        return False

    for prefix in ("gateway", "inference-", "history"):
        await eventually(functools.partial(logged_by, prefix), 30, f"{prefix} logged it", 0.5)


async def test_three_workers_share_a_thousand_uploads(
    system: System, drawings: list[bytes], predictions: Predictions
) -> None:
    system.add_inference_worker()  # a third worker joins the group
    system.inference_ready()
    images = [drawings[i % len(drawings)] for i in range(1000)]
    ids = await upload_all(system.gateway_url, images, concurrency=32)
    await eventually(lambda: not predictions.missing(ids), 120, "all 1,000 uploads predicted")
    workers = {p.worker_id for d in ids for p in predictions.by_digit[d]}
    assert len(workers) == 3, f"expected the 3 workers to share the load, got {workers}"
    assert len(ids) == len(set(ids)) == 1000


async def test_a_killed_worker_loses_nothing(
    system: System, drawings: list[bytes], predictions: Predictions
) -> None:
    first = asyncio.create_task(
        upload_all(system.gateway_url, [drawings[i % 300] for i in range(600)], concurrency=8)
    )
    await eventually(lambda: len(predictions.by_digit) >= 50, 60, "stream flowing")
    system.services["inference-0"].kill()  # kill -9 mid-stream
    ids = await first
    await eventually(lambda: not predictions.missing(ids), 120, "every id predicted after the kill")
    system.restart("inference-0")
    system.inference_ready()


async def test_promotion_mid_stream_switches_new_predictions(
    system: System, models: Models, drawings: list[bytes], predictions: Predictions
) -> None:
    mnistream("promote", str(models.weak), "--force", "--reason", "e2e: known start")
    system.inference_ready()
    promoted = asyncio.Event()
    ids: list[uuid.UUID] = []

    async def keep_drawing() -> None:
        # Uploads flow before, during and for a while after the promotion.
        after = 0
        while after < 100:
            ids.extend(await upload_all(system.gateway_url, [drawings[len(ids) % 300]] * 10))
            after += 10 if promoted.is_set() else 0

    stream = asyncio.create_task(keep_drawing())
    await eventually(lambda: len(predictions.by_digit) >= 100, 60, "stream flowing")
    await asyncio.to_thread(mnistream, "promote", str(models.better), "--reason", "e2e: better")
    await eventually(lambda: _serves(system, models.better), 30, "every worker swapped")
    promoted.set()
    await stream
    await eventually(lambda: not predictions.missing(ids), 120, "every upload predicted")
    versions = [
        next(p.model.version for p in predictions.by_digit[d] if p.kind == "live") for d in ids
    ]
    assert versions[0] == models.weak
    assert versions[-50:] == [models.better] * 50, "uploads after the swap get the new version"
    assert set(versions) == {models.weak, models.better}


async def _serves(system: System, version: int) -> bool:
    async with httpx.AsyncClient(timeout=5) as client:
        for name, service in system.services.items():
            if name.startswith("inference-") and service.process and service.process.poll() is None:
                port = service.env["INFERENCE_HTTP_PORT"]
                body = (await client.get(f"http://127.0.0.1:{port}/readyz")).json()
                if body["model"]["version"] != version:
                    return False
    return True


async def test_poison_goes_to_dead_letter_and_the_worker_keeps_serving(
    system: System, drawings: list[bytes], predictions: Predictions
) -> None:
    servers = require_kafka()
    consumer = AIOKafkaConsumer(**client_options(servers), enable_auto_commit=False)
    await consumer.start()
    partitions = [TopicPartition(DIGITS_DEADLETTER.name, p) for p in range(3)]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)
    poison_key = f"poison-{uuid.uuid4()}".encode()
    not_an_image = DigitSubmitted(  # version 1: it carries no model input
        schema_version=1,
        digit_id=uuid.uuid4(),
        submitted_at=utc_now(),
        media_type="image/png",
        image=b"not a png",
        width=1,
        height=1,
    )
    producer = AIOKafkaProducer(**client_options(servers), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(DIGITS_SUBMITTED.name, b"{not json", key=poison_key)
        await producer.send_and_wait(
            DIGITS_SUBMITTED.name, not_an_image.to_bytes(), key=str(not_an_image.digit_id).encode()
        )
    finally:
        await producer.stop()
    letters: list[DeadLetter] = []

    async def read() -> None:
        batch = await consumer.getmany(timeout_ms=500)
        for records in batch.values():
            letters.extend(DeadLetter.from_bytes(r.value) for r in records)

    async def seen_both() -> bool:
        await read()
        mine = [d for d in letters if d.service == "inference-worker"]
        return any(d.source_key == poison_key for d in mine) and any(
            d.source_key == str(not_an_image.digit_id).encode() for d in mine
        )

    try:
        await eventually(seen_both, 60, "both poison records dead-lettered")
    finally:
        await consumer.stop()
    letter = next(d for d in letters if d.source_key == poison_key)
    assert letter.original == b"{not json"
    assert letter.source_topic == DIGITS_SUBMITTED.name
    assert "not a valid DigitSubmitted" in letter.error
    ids = await upload_all(system.gateway_url, drawings[:20])
    await eventually(lambda: not predictions.missing(ids), 30, "still serving")


def _png(width: int, height: int, mode: str = "L", color: int = 255) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


BAD_UPLOADS = [
    ("empty", b"", "image/png", 400, "empty"),
    ("not an image", b"hello world" * 10, "image/png", 415, "not a PNG or JPEG"),
    ("blank canvas", _png(280, 280), "image/png", 400, "blank"),
    (
        "too large in bytes",
        b"\x89PNG\r\n\x1a\n" + b"0" * 600_000,
        "image/png",
        413,
        "limit is 512 KB",
    ),
    ("too many pixels", _png(3000, 20), "image/png", 413, "2048 px"),
    ("truncated", _png(280, 280, color=0)[:60], "image/png", 400, "truncated"),
]


@pytest.mark.parametrize(
    ("name", "body", "declared", "status", "message"), BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS]
)
async def test_every_bad_upload_gets_its_4xx(
    system: System, name: str, body: bytes, declared: str, status: int, message: str
) -> None:
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=10) as client:
        response = await client.post("/api/predictions", files={"image": ("x.png", body, declared)})
        raw = await client.post(
            "/api/predictions", content=body, headers={"content-type": declared}
        )
        wrong_type = await client.post(
            "/api/predictions", content=b"{}", headers={"content-type": "application/json"}
        )
    for answer in (response, raw):
        assert answer.status_code == status, (name, answer.text)
        assert message.lower() in answer.json()["detail"].lower(), answer.json()
    assert wrong_type.status_code == 415
    assert "multipart/form-data" in wrong_type.json()["detail"]
