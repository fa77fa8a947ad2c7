"""Poison on every consumed topic: each bad record becomes a dead letter and consumers go on.

Four kinds of poison per topic: bytes that are not JSON, JSON of the wrong shape, an event
from a future schema version, and a record as large as the topic accepts. Each must reach
`digits.deadletter` with its source topic/partition/offset, its exact bytes, the error and
the service, and a normal event on the same partition after it must still be processed.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import MessageSizeTooLargeError
from mnistream_common.events import (
    DigitLabeled,
    DigitPredicted,
    DigitSubmitted,
    Event,
    ModelPromoted,
    ModelRef,
    RescoreTask,
    utc_now,
)
from mnistream_common.kafka import MAX_DEAD_LETTER_ORIGINAL, client_options
from mnistream_common.topics import (
    DIGITS_LABELED,
    DIGITS_PREDICTED,
    DIGITS_SUBMITTED,
    MODEL_PROMOTED,
    RESCORE_TASKS,
    TopicSpec,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests import helpers
from tests.e2e.support import Models, Predictions, mnistream, upload_all, upload_predicted
from tests.helpers import prediction
from tests.polling import eventually
from tests.reliability.support import DeadLetters, dead_letters
from tests.stack import require_kafka, require_postgres
from tests.system import System

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

# The broker refuses more than max.message.bytes; stay under it by the batch framing.
FRAMING_BYTES = 4096


@dataclass(frozen=True)
class Champion:
    """The model serving now, as the ledger tells it."""

    model: ModelRef
    onnx_uri: str


@dataclass(frozen=True)
class Sent:
    """Where Kafka put a record."""

    key: bytes
    value: bytes
    partition: int
    offset: int


@pytest.fixture
async def producer() -> AsyncIterator[AIOKafkaProducer]:
    """A durable producer that may send records up to the broker's own limit."""
    producing = AIOKafkaProducer(
        **client_options(require_kafka()), acks="all", max_request_size=8 * 1024 * 1024
    )
    await producing.start()
    try:
        yield producing
    finally:
        await producing.stop()


@pytest.fixture
async def letters() -> AsyncIterator[DeadLetters]:
    """Dead letters from now on."""
    async with dead_letters() as tap:
        yield tap


async def champion_of(system: System) -> Champion:
    """The champion's reference and ONNX location, from the read API's ledger."""
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=10) as client:
        body = (await client.get("/api/models")).json()["champion"]
    ref = ModelRef(name=body["model_name"], version=body["version"], sha256=body["sha256"])
    return Champion(ref, body["onnx_uri"])


async def topic_limit(topic: TopicSpec) -> int:
    """The largest record the broker accepts on `topic` (its effective max.message.bytes)."""
    admin = AIOKafkaAdminClient(**client_options(require_kafka()))
    await admin.start()
    try:
        response = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic.name)]
        )
        entries = {entry[0]: entry[1] for entry in response[0].resources[0][4]}
        return int(entries["max.message.bytes"])
    finally:
        await admin.close()


async def poisons(sample: Event, topic: TopicSpec) -> dict[str, bytes]:
    """The four kinds of poison for a topic whose events look like `sample`."""
    future = {**sample.model_dump(mode="json"), "schema_version": 2, "added_in_v2": True}
    limit = await topic_limit(topic)
    padding = "x" * (limit - FRAMING_BYTES - 200)
    return {
        "invalid JSON": b'{"digit_id": "0190c8a0-',
        "wrong schema": json.dumps({"hello": "world", "schema_version": 1}).encode(),
        "future schema_version 2": json.dumps(future).encode(),
        "oversized": json.dumps({"schema_version": 1, "padding": padding}).encode(),
    }


async def send(
    producer: AIOKafkaProducer, topic: TopicSpec, key: bytes, value: bytes, partition: int
) -> Sent:
    """Produce one record to one partition and wait for acks=all."""
    meta = await producer.send_and_wait(topic.name, value, key=key, partition=partition)
    return Sent(key, value, meta.partition, meta.offset)


async def expect_dead_letters(
    letters: DeadLetters, topic: TopicSpec, sent: list[Sent], services: tuple[str, ...]
) -> None:
    """Every poison record dead-lettered by each of `services`, with its provenance."""

    async def all_there() -> bool:
        await letters.read()
        return all(
            any(d.service == service for d in letters.about(s.key))
            for s in sent
            for service in services
        )

    # Generous: a partition may still be busy with the chunks of a whole rescore.
    await eventually(all_there, 300, f"every poison on {topic.name} dead-lettered by {services}")
    for s in sent:
        for letter in letters.about(s.key):
            assert letter.service in services, letter.service
            assert letter.source_topic == topic.name
            assert (letter.source_partition, letter.source_offset) == (s.partition, s.offset)
            assert letter.original == s.value, "the dead letter keeps the exact bytes"
            assert letter.error.strip(), "the dead letter says what was wrong"


async def poison_then(
    producer: AIOKafkaProducer,
    letters: DeadLetters,
    topic: TopicSpec,
    sample: Event,
    services: tuple[str, ...],
    partition: int = 0,
) -> None:
    """Publish the four poisons on one partition and wait for their dead letters."""
    run = uuid.uuid4().hex[:8]
    sent = [
        await send(producer, topic, f"poison-{run}-{kind}".encode(), value, partition)
        for kind, value in (await poisons(sample, topic)).items()
    ]
    await expect_dead_letters(letters, topic, sent, services)


async def row_exists(query: str, **params: Any) -> bool:
    """Whether a query over the history tables returns a row."""
    engine = create_async_engine(require_postgres())
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(query), params)).first() is not None
    finally:
        await engine.dispose()


def submitted(image: bytes) -> DigitSubmitted:
    """A drawing as the gateway would publish it (with its model input)."""
    return helpers.submitted(image)


def predicted(model: ModelRef) -> DigitPredicted:
    """A live prediction of a drawing no one uploaded (kept, waiting for its drawing)."""
    return prediction(
        model=model, digit=1, confidence=0.1, worker_id="reliability", submitted_at=utc_now()
    )


async def test_poison_on_digits_submitted(
    system: System,
    drawings: list[bytes],
    producer: AIOKafkaProducer,
    letters: DeadLetters,
    predictions: Predictions,
) -> None:
    partition = 5
    await poison_then(
        producer,
        letters,
        DIGITS_SUBMITTED,
        submitted(drawings[0]),
        ("inference-worker", "history-service"),
        partition,
    )
    normal = submitted(drawings[1])
    await send(
        producer, DIGITS_SUBMITTED, str(normal.digit_id).encode(), normal.to_bytes(), partition
    )
    await eventually(
        lambda: not predictions.missing([normal.digit_id]), 60, "the next drawing predicted"
    )
    await eventually(
        lambda: row_exists("SELECT 1 FROM drawings WHERE digit_id = :d", d=normal.digit_id),
        60,
        "the next drawing stored",
    )


async def test_poison_on_digits_predicted(
    system: System,
    models: Models,
    producer: AIOKafkaProducer,
    letters: DeadLetters,
    drawings: list[bytes],
) -> None:
    champion = await champion_of(system)
    partition = 7
    await poison_then(
        producer,
        letters,
        DIGITS_PREDICTED,
        predicted(champion.model),
        ("history-service",),
        partition,
    )
    normal = predicted(champion.model)
    await send(
        producer, DIGITS_PREDICTED, str(normal.digit_id).encode(), normal.to_bytes(), partition
    )
    await eventually(
        lambda: row_exists("SELECT 1 FROM predictions WHERE digit_id = :d", d=normal.digit_id),
        60,
        "the next prediction stored",
    )
    # The gateways read digits.predicted too (without a group): they skipped the poison.
    await upload_predicted(system.gateway_url, drawings[0])


@dataclass(frozen=True)
class Refused:
    """A schema-valid event that a history table refuses, made from a valid one."""

    name: str
    topic: TopicSpec
    change: Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    *parents, leaf = path.split(".")

    def change(payload: dict[str, Any]) -> None:
        for part in parents:
            payload = payload[part]
        payload[leaf] = value

    return change


def _job(payload: dict[str, Any]) -> None:
    payload.update(kind="rescore", job_id=str(uuid.uuid4()), job_total=2**31)


REFUSED = [
    Refused("provider longer than its column", DIGITS_PREDICTED, _set("provider", "p" * 65)),
    Refused("model version above int32", DIGITS_PREDICTED, _set("model.version", 2**31)),
    Refused("Infinity in timings (JSONB)", DIGITS_PREDICTED, _set("timings.queue_ms", math.inf)),
    Refused("job_total above int32", DIGITS_PREDICTED, _job),
    Refused("width above int32", DIGITS_SUBMITTED, _set("width", 2**31)),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c.name for c in REFUSED])
async def test_a_valid_event_a_table_refuses_is_dead_lettered_and_the_partition_goes_on(
    system: System,
    producer: AIOKafkaProducer,
    letters: DeadLetters,
    drawings: list[bytes],
    case: Refused,
) -> None:
    champion = await champion_of(system)
    sample: Event = (
        submitted(drawings[0]) if case.topic is DIGITS_SUBMITTED else predicted(champion.model)
    )
    payload = sample.model_dump(mode="json")
    case.change(payload)
    value = json.dumps(payload).encode()
    type(sample).from_bytes(value)  # valid: only the table refuses it
    partition = 9
    poison = await send(producer, case.topic, str(sample.digit_id).encode(), value, partition)  # type: ignore[attr-defined]

    await expect_dead_letters(letters, case.topic, [poison], ("history-service",))
    [letter] = letters.about(poison.key)
    assert "PostgreSQL refused the row" in letter.error, letter.error

    normal = submitted(drawings[1]) if case.topic is DIGITS_SUBMITTED else predicted(champion.model)
    await send(producer, case.topic, str(normal.digit_id).encode(), normal.to_bytes(), partition)
    table = "drawings" if case.topic is DIGITS_SUBMITTED else "predictions"
    await eventually(
        lambda: row_exists(f"SELECT 1 FROM {table} WHERE digit_id = :d", d=normal.digit_id),
        60,
        "the next record on the partition stored",
    )
    async with httpx.AsyncClient(base_url=system.history_url, timeout=10) as client:
        assert (await client.get("/readyz")).status_code == 200


async def test_poison_on_digits_labeled(
    system: System, producer: AIOKafkaProducer, letters: DeadLetters
) -> None:
    partition = 3
    label = DigitLabeled(digit_id=uuid.uuid4(), label=4, labeled_at=utc_now())
    await poison_then(producer, letters, DIGITS_LABELED, label, ("history-service",), partition)
    normal = DigitLabeled(digit_id=uuid.uuid4(), label=7, labeled_at=utc_now())
    await send(
        producer, DIGITS_LABELED, str(normal.digit_id).encode(), normal.to_bytes(), partition
    )
    await eventually(
        lambda: row_exists("SELECT 1 FROM labels WHERE digit_id = :d", d=normal.digit_id),
        60,
        "the next label stored",
    )


@pytest.mark.timeout(600)
async def test_poison_on_rescore_tasks(
    system: System,
    drawings: list[bytes],
    producer: AIOKafkaProducer,
    letters: DeadLetters,
    predictions: Predictions,
) -> None:
    champion = await champion_of(system)
    ids = await upload_all(system.gateway_url, drawings[:5], wait_ms=5000)
    await eventually(lambda: _all_stored(ids), 60, "the drawings to rescore are stored")

    def task(digit_ids: list[uuid.UUID]) -> RescoreTask:
        return RescoreTask(
            job_id=uuid.uuid4(),
            kind="candidate",
            model=champion.model,
            onnx_uri=champion.onnx_uri,
            chunk_index=0,
            chunk_count=1,
            job_total=len(digit_ids),
            digit_ids=digit_ids,
        )

    partition = 2
    await poison_then(producer, letters, RESCORE_TASKS, task(ids), ("rescore-worker",), partition)
    normal = task(ids)
    await send(producer, RESCORE_TASKS, f"{normal.job_id}:0".encode(), normal.to_bytes(), partition)

    def rescored() -> bool:
        return all(any(p.job_id == normal.job_id for p in predictions.by_digit[d]) for d in ids)

    # Runs before the ledger test, whose promotion starts a rescore of every stored drawing.
    await eventually(rescored, 300, "the next rescore task scored")


async def _all_stored(ids: list[uuid.UUID]) -> bool:
    return await row_exists(
        "SELECT 1 WHERE (SELECT count(*) FROM drawings WHERE digit_id = ANY(:ids)) = :n",
        ids=ids,
        n=len(ids),
    )


async def test_poison_on_model_promoted(
    system: System, producer: AIOKafkaProducer, letters: DeadLetters
) -> None:
    champion = await champion_of(system)
    sample = ModelPromoted(
        model=champion.model,
        onnx_uri=champion.onnx_uri,
        architecture="mlp",
        promoted_by="reliability@localhost",
        promoted_at=datetime.now(UTC),
    )
    await poison_then(producer, letters, MODEL_PROMOTED, sample, ("history-service",))
    # Workers and gateways read the ledger without a group and skip what they cannot read;
    # one that starts now, with poison at the end of the ledger, still serves the champion.
    system.services["inference-1"].stop()
    system.restart("inference-1")
    system.inference_ready(timeout=60)
    reason = f"reliability: after poison {uuid.uuid4().hex[:8]}"
    mnistream("promote", str(champion.model.version), "--force", "--reason", reason)
    await eventually(
        lambda: row_exists("SELECT 1 FROM promotions WHERE reason = :r", r=reason),
        60,
        "the next promotion recorded in the ledger table",
    )


@pytest.mark.parametrize(
    "topic",
    [DIGITS_SUBMITTED, DIGITS_PREDICTED, DIGITS_LABELED, MODEL_PROMOTED, RESCORE_TASKS],
    ids=lambda t: t.name,
)
async def test_no_topic_accepts_a_record_too_large_to_dead_letter(
    stack: None, producer: AIOKafkaProducer, topic: TopicSpec
) -> None:
    assert await topic_limit(topic) <= MAX_DEAD_LETTER_ORIGINAL
    with pytest.raises(MessageSizeTooLargeError):
        await producer.send_and_wait(topic.name, b"x" * (MAX_DEAD_LETTER_ORIGINAL + 1), key=b"big")
