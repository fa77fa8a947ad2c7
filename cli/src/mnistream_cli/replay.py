"""Replays: following the history group's lag, re-publishing dead letters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from mnistream_common.events import DeadLetter, InvalidEventError
from mnistream_common.kafka import durable_producer
from mnistream_common.topics import DIGITS_DEADLETTER, TopicSpec

DEADLETTER_GROUP = "deadletter-replay"


def deadletter_group(topic: str | None) -> str:
    """The group that remembers how far replays of `topic`'s letters (or of all) have got.

    One group per filter: a replay of one topic's letters never moves past another's, so those
    stay for their own replay. A letter replayed both by topic and without a filter is
    re-published twice, which every consumer absorbs (its writes are idempotent).
    """
    return f"{DEADLETTER_GROUP}.{topic}" if topic else DEADLETTER_GROUP


@dataclass(frozen=True)
class DeadLetterReplay:
    """What a dead-letter replay re-published, per source topic, and what it skipped."""

    republished: dict[str, int]
    skipped: int


async def replay_dead_letters(
    bootstrap_servers: str,
    *,
    topic: str | None,
    progress: Callable[[int, int], None] = lambda done, total: None,
    letters: TopicSpec = DIGITS_DEADLETTER,
) -> DeadLetterReplay:
    """Re-publish each dead letter (once: the group remembers how far it got) to its source."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=deadletter_group(topic),
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    try:
        await consumer.start()
        async with durable_producer(bootstrap_servers) as producer:
            return await _replay_loop(consumer, producer, letters, topic, progress)
    finally:
        await consumer.stop()


async def _replay_loop(
    consumer: AIOKafkaConsumer,
    producer: AIOKafkaProducer,
    letters: TopicSpec,
    topic: str | None,
    progress: Callable[[int, int], None],
) -> DeadLetterReplay:
    partitions = [TopicPartition(letters.name, p) for p in range(letters.partitions)]
    consumer.assign(partitions)
    beginnings = await consumer.beginning_offsets(partitions)
    for tp in partitions:  # resume where the last replay stopped
        committed = await consumer.committed(tp)
        consumer.seek(tp, beginnings[tp] if committed is None else committed)
    ends = await consumer.end_offsets(partitions)
    total = sum(await _remaining(consumer, ends))
    republished: dict[str, int] = {}
    skipped = done = 0
    while any(await _remaining(consumer, ends)):
        batch = await consumer.getmany(*partitions, timeout_ms=1000)
        for records in batch.values():
            for record in records:
                done += 1
                letter = _letter(record.value)
                if letter is None or (topic and letter.source_topic != topic):
                    skipped += 1
                    continue
                await producer.send_and_wait(
                    letter.source_topic, letter.original, key=letter.source_key
                )
                republished[letter.source_topic] = republished.get(letter.source_topic, 0) + 1
        positions = {tp: OffsetAndMetadata(await consumer.position(tp), "") for tp in partitions}
        await consumer.commit(positions)
        progress(done, total)
    return DeadLetterReplay(republished, skipped)


async def _remaining(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> list[int]:
    return [max(0, ends[tp] - await consumer.position(tp)) for tp in ends]


def _letter(value: bytes | None) -> DeadLetter | None:
    try:
        return DeadLetter.from_bytes(value or b"")
    except InvalidEventError:
        return None
