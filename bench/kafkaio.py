"""Talking to Kafka directly: pre-filling topics, moving groups past old records, and watching
`digits.predicted` with a consumer of our own (no group), as a client would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from mnistream_common.kafka import MAX_REQUEST_BYTES, client_options
from mnistream_common.settings import KafkaSettings
from mnistream_common.topics import DIGITS_PREDICTED, DIGITS_SUBMITTED, TopicSpec

from bench.inputs import Drawings


def _kafka() -> KafkaSettings:
    """The bench stack's Kafka (KAFKA_BOOTSTRAP_SERVERS), signed in as its operator."""
    return KafkaSettings()


async def publish_submitted(drawings: Drawings, count: int) -> list[uuid.UUID]:
    """Publish `count` DigitSubmitted events (acks=all, idempotent); their digit ids."""
    producer = AIOKafkaProducer(
        **client_options(_kafka()),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=MAX_REQUEST_BYTES,
    )
    await producer.start()
    try:
        ids: list[uuid.UUID] = []
        pending = []
        for index in range(count):
            event = drawings.submitted(index)
            ids.append(event.digit_id)
            key = str(event.digit_id).encode()
            pending.append(await producer.send(DIGITS_SUBMITTED.name, event.to_bytes(), key=key))
            if len(pending) >= 500:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return ids
    finally:
        await producer.stop()


async def skip_to_end(group: str, topics: Sequence[TopicSpec]) -> None:
    """Commit the end of `topics` for `group` (which must have no running member), so its
    consumers start after everything earlier phases produced."""
    consumer = AIOKafkaConsumer(
        **client_options(_kafka()), group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(t.name, p) for t in topics for p in range(t.partitions)]
        ends = await consumer.end_offsets(partitions)
        consumer.assign(partitions)
        await consumer.commit({tp: int(offset) for tp, offset in ends.items()})
    finally:
        await consumer.stop()


def _timestamp(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value).timestamp()


@dataclass(frozen=True)
class Seen:
    """One prediction as the benchmark's consumer saw it (times are Unix seconds)."""

    digit_id: uuid.UUID
    kind: str
    version: int
    worker_id: str
    occurred_at: float
    submitted_at: float | None
    observed_at: float
    queue_ms: float
    preprocess_ms: float
    inference_ms: float
    batch_size: int


def _seen(raw: bytes, observed_at: float) -> Seen:
    data: dict[str, Any] = json.loads(raw)
    timings = data["timings"]
    return Seen(
        digit_id=uuid.UUID(data["digit_id"]),
        kind=data["kind"],
        version=int(data["model"]["version"]),
        worker_id=data["worker_id"],
        occurred_at=_timestamp(data["occurred_at"]) or observed_at,
        submitted_at=_timestamp(data.get("submitted_at")),
        observed_at=observed_at,
        queue_ms=float(timings["queue_ms"]),
        preprocess_ms=float(timings["preprocess_ms"]),
        inference_ms=float(timings["inference_ms"]),
        batch_size=int(timings["batch_size"]),
    )


@dataclass
class Collector:
    """Every prediction published since it started, in arrival order."""

    seen: list[Seen] = field(default_factory=list)
    live: dict[uuid.UUID, Seen] = field(default_factory=dict)

    def add(self, item: Seen) -> None:
        """Keep a prediction (the first live one per digit)."""
        self.seen.append(item)
        if item.kind == "live":
            self.live.setdefault(item.digit_id, item)

    def missing(self, ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        """Ids without a live prediction yet."""
        return [d for d in ids if d not in self.live]

    async def wait_for(self, ids: Sequence[uuid.UUID], timeout: float) -> list[uuid.UUID]:  # noqa: ASYNC109
        """Wait until each id has a live prediction; returns the ids still missing."""
        deadline = time.monotonic() + timeout
        pending = list(ids)
        while pending and time.monotonic() < deadline:
            pending = self.missing(pending)
            if pending:
                await asyncio.sleep(0.05)
        return self.missing(pending)


@asynccontextmanager
async def collecting() -> AsyncIterator[Collector]:
    """Collect `digits.predicted` from its current end until the block exits."""
    collector = Collector()
    consumer = AIOKafkaConsumer(
        **client_options(_kafka()), enable_auto_commit=False, fetch_max_wait_ms=50
    )
    await consumer.start()
    partitions = [
        TopicPartition(DIGITS_PREDICTED.name, p) for p in range(DIGITS_PREDICTED.partitions)
    ]
    consumer.assign(partitions)
    ends = await consumer.end_offsets(partitions)
    for tp, offset in ends.items():
        consumer.seek(tp, int(offset))

    async def collect() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=2000)
            observed = time.time()
            for records in batches.values():
                for record in records:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        collector.add(_seen(record.value or b"", observed))

    task = asyncio.create_task(collect())
    try:
        yield collector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()


async def group_lag(group: str) -> int:
    """Records `group` has still to read in its topics (`mnistream status`'s lag)."""
    from mnistream_common.groups import group_status

    [status] = await group_status(_kafka(), [group])
    return sum(status.lag.values())


async def wait_drained(
    group: str,
    timeout: float,  # noqa: ASYNC109
    *,
    at_most: int = 0,
) -> int:
    """Wait until `group` has caught up with its topics (or `timeout` passes); the lag left."""
    deadline = time.monotonic() + timeout
    lag = await group_lag(group)
    while lag > at_most and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        lag = await group_lag(group)
    return lag


async def wait_group_stable(group: str, members: int, timeout: float) -> bool:  # noqa: ASYNC109
    """Wait until `group` is Stable with `members` members (a consumer group has joined)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client_options(_kafka()))
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            responses = await admin.describe_consumer_groups([group])
            for response in responses:
                for described in response.groups:
                    # (error_code, group_id, state, protocol_type, protocol, members, ...)
                    if described[2] == "Stable" and len(described[5]) == members:
                        return True
            await asyncio.sleep(0.5)
        return False
    finally:
        await admin.close()
