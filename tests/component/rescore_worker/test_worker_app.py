"""The rescore worker as wired by its composition root, on FastStream's in-memory Kafka: a
promotion read from the ledger is planned into chunks, every chunk is scored through the
worker's own subscribers, and a task it can never score goes to the dead letters."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from mnistream_common.consume import Backoff, records_of
from mnistream_common.events import DeadLetter, DigitPredicted, ModelPromoted
from mnistream_common.history_client import HistoryUnavailableError
from mnistream_common.kafka import make_broker
from mnistream_common.rescore import job_id_for, plan_chunks
from mnistream_common.topics import (
    DIGITS_DEADLETTER,
    DIGITS_PREDICTED,
    MODEL_PROMOTED,
    RESCORE_TASKS,
)
from rescore_worker.app import Overrides, build_parts, subscribe
from rescore_worker.metrics import RescoreMetrics
from rescore_worker.settings import Settings

from tests.helpers import (
    SEVEN,
    FakeHistory,
    FakeObjectStore,
    FakeRegistry,
    drawing_png,
    promotion,
    tiny_onnx_model,
)

ONNX = tiny_onnx_model(301)
BUCKET = "drawings"


@dataclass
class Worker:
    """The worker's broker, the drawings it can see, and what it published."""

    broker: Any
    history: FakeHistory
    backoff: Backoff
    store: FakeObjectStore
    registry: FakeRegistry
    predicted: list[DigitPredicted] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    settings = Settings(
        _env_file=None,
        kafka_bootstrap_servers="kafka.invalid:9092",
        history_url="http://history.test",
        worker_id="rescore-under-test",
        rescore_chunk_size=4,
        drawings_bucket=BUCKET,
        prefer_gpu=False,
        log_json=False,
        log_level="WARNING",
    )
    store, history, registry = FakeObjectStore(), FakeHistory(), FakeRegistry()
    store.add("s3://mlflow/models/v1.onnx", ONNX)
    registry.add(ONNX, 1)

    async def ledger_end() -> int:
        return 1

    broker = make_broker(settings, client_id=settings.worker_id)
    metrics = RescoreMetrics()

    async def caught_up() -> None:  # history is never behind here
        return None

    overrides = Overrides(
        store.as_store(),
        httpx.MockTransport(history.handle),
        ledger_end,
        registry.transport(),
        caught_up,
    )
    parts = dataclasses.replace(
        build_parts(settings, broker, metrics, overrides), backoff=Backoff(0.01, 0.04)
    )
    subscribe(broker, parts, metrics)
    running = Worker(broker, history, parts.backoff, store, registry)

    @broker.subscriber(DIGITS_PREDICTED.name, group_id="test-predicted")
    async def on_predicted(msg: KafkaMessage) -> None:
        running.predicted.extend(DigitPredicted.from_bytes(r.value or b"") for r in records_of(msg))

    @broker.subscriber(DIGITS_DEADLETTER.name, group_id="test-deadletter")
    async def on_dead(msg: KafkaMessage) -> None:
        running.dead.extend(DeadLetter.from_bytes(r.value or b"") for r in records_of(msg))

    async with TestKafkaBroker(broker):
        yield running
    await parts.history.close()


def store_drawings(worker: Worker, count: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    for digit_id in ids:
        worker.history.store(digit_id, drawing_png(SEVEN))
    return ids


async def test_a_promotion_is_planned_and_every_stored_drawing_rescored_once(
    worker: Worker,
) -> None:
    ids = store_drawings(worker, 10)
    event = promotion(ONNX, 1)

    await worker.broker.publish(event.to_bytes(), MODEL_PROMOTED.name, key=b"mnist-digits")

    assert sorted(p.digit_id for p in worker.predicted) == sorted(ids)
    assert {(p.kind, p.model.version, p.job_id, p.job_total) for p in worker.predicted} == {
        ("rescore", 1, job_id_for(event), 10)
    }
    assert worker.dead == []


async def test_an_invalid_task_is_dead_lettered_and_the_next_is_scored(worker: Worker) -> None:
    ids = store_drawings(worker, 3)
    [task] = plan_chunks(
        uuid.uuid4(), "candidate", promotion(ONNX, 1).model, "s3://mlflow/models/v1.onnx", ids, 10
    )

    await worker.broker.publish(b"{not a task", RESCORE_TASKS.name, key=b"poison")
    await worker.broker.publish(task.to_bytes(), RESCORE_TASKS.name, key=b"job:0")

    assert [(d.source_topic, d.original, d.service) for d in worker.dead] == [
        (RESCORE_TASKS.name, b"{not a task", "rescore-worker")
    ]
    assert sorted(p.digit_id for p in worker.predicted) == sorted(ids)


async def test_a_task_whose_model_cannot_be_read_is_dead_lettered_with_the_reason(
    worker: Worker,
) -> None:
    ids = store_drawings(worker, 2)
    missing: ModelPromoted = promotion(tiny_onnx_model(302), 2)
    worker.registry.add(tiny_onnx_model(302), 2)  # registered, but its object is gone
    [task] = plan_chunks(uuid.uuid4(), "candidate", missing.model, missing.onnx_uri, ids, 10)

    await worker.broker.publish(task.to_bytes(), RESCORE_TASKS.name, key=b"job:0")

    [letter] = worker.dead
    assert letter.original == task.to_bytes()
    assert "model v2 rejected" in letter.error and "NoSuchKey" in letter.error
    assert worker.predicted == []


async def test_a_task_for_a_model_the_registry_does_not_hold_is_dead_lettered_unread(
    worker: Worker,
) -> None:
    """A forged promotion's task: the object exists and matches the event's sha256, but the
    registry holds no such version (or holds it with another sha256); no model is read."""
    ids = store_drawings(worker, 2)
    for version, registered in ((2, None), (3, tiny_onnx_model(304))):
        forged: ModelPromoted = promotion(tiny_onnx_model(303), version)
        worker.store.add(forged.onnx_uri, tiny_onnx_model(303))
        if registered is not None:
            worker.registry.add(registered, version)
        [task] = plan_chunks(uuid.uuid4(), "candidate", forged.model, forged.onnx_uri, ids, 10)

        await worker.broker.publish(task.to_bytes(), RESCORE_TASKS.name, key=b"job:0")

        assert forged.onnx_uri not in worker.store.reads
    first, second = worker.dead
    assert "not in the model registry" in first.error, first.error
    assert "registered with sha256" in second.error and "forged" in second.error, second.error
    assert worker.predicted == []


async def test_a_chunk_failing_on_an_outage_is_read_again_after_a_growing_pause(
    worker: Worker,
) -> None:
    """history-service unreachable: the task is neither dead-lettered (its job would never
    finish) nor redelivered in a hot loop; each failure pauses longer."""
    ids = store_drawings(worker, 2)
    [task] = plan_chunks(
        uuid.uuid4(), "candidate", promotion(ONNX, 1).model, "s3://mlflow/models/v1.onnx", ids, 10
    )
    worker.history.down = True
    pauses = []
    for _ in range(3):
        with pytest.raises(HistoryUnavailableError):
            await worker.broker.publish(task.to_bytes(), RESCORE_TASKS.name, key=b"job:0")
        pauses.append(worker.backoff.last_s)
    assert pauses == [0.01, 0.02, 0.04]
    assert worker.dead == [] and worker.predicted == []

    worker.history.down = False
    await worker.broker.publish(task.to_bytes(), RESCORE_TASKS.name, key=b"job:0")
    assert sorted(p.digit_id for p in worker.predicted) == sorted(ids)
    assert worker.backoff.failures == 0
