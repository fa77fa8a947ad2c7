"""Kafka reads and writes the CLI makes: the promotion ledger, promotions, evaluation tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from mnistream_common.events import InvalidEventError, ModelPromoted, RescoreTask
from mnistream_common.kafka import MAX_REQUEST_BYTES
from mnistream_common.rescore import task_key
from mnistream_common.topics import MODEL_PROMOTED, RESCORE_TASKS

PUBLISH_TIMEOUT_S = 15.0


async def read_ledger(bootstrap_servers: str) -> list[ModelPromoted]:
    """Every valid promotion in the ledger, oldest first."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    try:
        await consumer.start()
        partition = TopicPartition(MODEL_PROMOTED.name, 0)
        consumer.assign([partition])
        end = (await consumer.end_offsets([partition]))[partition]
        # An explicit seek: seek_to_beginning right after end_offsets left the position at
        # the end here (aiokafka 0.14), silently reading an empty ledger.
        consumer.seek(partition, (await consumer.beginning_offsets([partition]))[partition])
        events: list[ModelPromoted] = []
        while await consumer.position(partition) < end:
            batch = await consumer.getmany(partition, timeout_ms=1000)
            for record in batch.get(partition, []):
                try:
                    events.append(ModelPromoted.from_bytes(record.value or b""))
                except InvalidEventError:
                    continue  # history-service dead-letters it; the ledger skips it
        return events
    finally:
        await consumer.stop()


async def _producer(bootstrap_servers: str) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        max_request_size=MAX_REQUEST_BYTES,
        request_timeout_ms=int(PUBLISH_TIMEOUT_S * 1000),
    )
    try:
        await asyncio.wait_for(producer.start(), PUBLISH_TIMEOUT_S)
    except BaseException:
        await producer.stop()
        raise
    return producer


async def publish_promotion(bootstrap_servers: str, event: ModelPromoted) -> None:
    """Append a promotion to the ledger and wait until Kafka has it (acks=all)."""
    producer = await _producer(bootstrap_servers)
    try:
        await asyncio.wait_for(
            producer.send_and_wait(
                MODEL_PROMOTED.name, event.to_bytes(), key=event.model.name.encode()
            ),
            PUBLISH_TIMEOUT_S,
        )
    finally:
        await producer.stop()


async def publish_tasks(bootstrap_servers: str, tasks: Sequence[RescoreTask]) -> None:
    """Publish the chunks of a job (acks=all)."""
    producer = await _producer(bootstrap_servers)
    try:
        futures = [
            await producer.send(RESCORE_TASKS.name, t.to_bytes(), key=task_key(t)) for t in tasks
        ]
        await asyncio.wait_for(asyncio.gather(*futures), PUBLISH_TIMEOUT_S * 4)
    finally:
        await producer.stop()
