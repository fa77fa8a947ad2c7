"""The inference worker as wired by its composition root, on FastStream's in-memory Kafka: it
consumes nothing before the first promotion, then reads drawings in batches and publishes live
predictions (and dead letters) through the same broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from inference_worker import app as worker_app
from inference_worker.settings import Settings
from mnistream_common.consume import records_of
from mnistream_common.events import DeadLetter, DigitPredicted, ModelPromoted, ModelRef
from mnistream_common.topics import (
    DIGITS_DEADLETTER,
    DIGITS_PREDICTED,
    DIGITS_SUBMITTED,
    MODEL_PROMOTED,
)
from mnistream_serving.model import LoadedModel, RuntimeOptions, build_model

from tests.helpers import promotion, submitted, tiny_onnx_model
from tests.polling import eventually

ONNX = tiny_onnx_model(7)


class Outputs:
    """What the worker published."""

    def __init__(self) -> None:
        self.predicted: list[DigitPredicted] = []
        self.dead: list[DeadLetter] = []


@pytest.fixture
async def running() -> AsyncIterator[tuple[Any, Outputs, Any]]:
    async def load_model(model: ModelRef, onnx_uri: str) -> LoadedModel:
        return build_model(model, ONNX, RuntimeOptions(1, False, 4))  # no object store

    settings = Settings(
        _env_file=None,
        kafka_bootstrap_servers="kafka.invalid:9092",
        s3_endpoint_url="http://minio.invalid:9000",
        worker_id="worker-under-test",
        log_json=False,
        log_level="WARNING",
    )
    worker = worker_app.build_worker(settings, worker_app.Overrides(load_model=load_model))
    outputs = Outputs()

    @worker.broker.subscriber(DIGITS_PREDICTED.name, group_id="test-predicted")
    async def on_predicted(msg: KafkaMessage) -> None:
        outputs.predicted.extend(DigitPredicted.from_bytes(r.value or b"") for r in records_of(msg))

    @worker.broker.subscriber(DIGITS_DEADLETTER.name, group_id="test-deadletter")
    async def on_dead(msg: KafkaMessage) -> None:
        outputs.dead.extend(DeadLetter.from_bytes(r.value or b"") for r in records_of(msg))

    async with TestKafkaBroker(worker.broker) as broker:
        keeper = asyncio.create_task(worker.keeper.run())
        try:
            yield worker, outputs, broker
        finally:
            keeper.cancel()


async def consuming(worker: Any) -> None:
    async def started() -> bool:
        return bool(worker.consuming)

    await eventually(started, 10, "consuming after the first model")


async def promote(broker: Any, event: ModelPromoted) -> None:
    await broker.publish(event.to_bytes(), MODEL_PROMOTED.name, key=b"mnist-digits")


async def test_nothing_is_consumed_before_the_first_promotion(running: Any) -> None:
    worker, outputs, broker = running
    drawing = submitted()

    await broker.publish(drawing.to_bytes(), DIGITS_SUBMITTED.name, key=b"k")

    assert not worker.consuming and outputs.predicted == []


async def test_after_a_promotion_drawings_are_predicted_live_by_that_model(running: Any) -> None:
    worker, outputs, broker = running
    await promote(broker, promotion(ONNX, version=4))
    await consuming(worker)
    drawings = [submitted() for _ in range(3)]

    for drawing in drawings:
        await broker.publish(
            drawing.to_bytes(), DIGITS_SUBMITTED.name, key=str(drawing.digit_id).encode()
        )

    assert [p.digit_id for p in outputs.predicted] == [d.digit_id for d in drawings]
    assert {(p.kind, p.model.version, p.worker_id) for p in outputs.predicted} == {
        ("live", 4, "worker-under-test")
    }
    assert all(p.provider == "CPUExecutionProvider" for p in outputs.predicted)


async def test_a_poison_record_goes_to_dead_letter_and_the_next_is_served(running: Any) -> None:
    worker, outputs, broker = running
    await promote(broker, promotion(ONNX, version=4))
    await consuming(worker)
    good = submitted()

    await broker.publish(b"{not json", DIGITS_SUBMITTED.name, key=b"poison")
    await broker.publish(good.to_bytes(), DIGITS_SUBMITTED.name, key=str(good.digit_id).encode())

    assert [(d.source_topic, d.original, d.source_key) for d in outputs.dead] == [
        (DIGITS_SUBMITTED.name, b"{not json", b"poison")
    ]
    assert [p.digit_id for p in outputs.predicted] == [good.digit_id]
