"""Replays: following the history group's lag, re-publishing dead letters."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from mnistream_common.events import (
    DeadLetter,
    DigitErased,
    Event,
    InvalidEventError,
    RescoreSkipped,
    RescoreTask,
)
from mnistream_common.kafka import client_options, durable_producer, read_topic
from mnistream_common.rescore import task_key
from mnistream_common.settings import KafkaSettings
from mnistream_common.topics import (
    DIGITS_DEADLETTER,
    DIGITS_ERASED,
    DIGITS_LABELED,
    DIGITS_PREDICTED,
    DIGITS_SUBMITTED,
    RESCORE_SKIPPED,
    RESCORE_TASKS,
    TopicSpec,
)

DEADLETTER_GROUP = "deadletter-replay"
# Where a letter may go back to. Never model.promoted: a letter is data anyone who can write
# the dead-letter topic could forge, and a promotion goes through `mnistream promote`'s gate.
REPLAYABLE: Mapping[str, TopicSpec] = {
    spec.name: spec
    for spec in (DIGITS_SUBMITTED, DIGITS_PREDICTED, DIGITS_LABELED, RESCORE_TASKS, RESCORE_SKIPPED)
}


def deadletter_group(topic: str | None) -> str:
    """The group that remembers how far replays of `topic`'s letters (or of all) have got.

    One group per filter: a replay of one topic's letters never moves past another's, so those
    stay for their own replay. A letter replayed both by topic and without a filter is
    re-published twice, which every consumer absorbs (its writes are idempotent).
    """
    return f"{DEADLETTER_GROUP}.{topic}" if topic else DEADLETTER_GROUP


@dataclass
class DeadLetterReplay:
    """What a dead-letter replay re-published, per source topic, what it skipped (other topics,
    unreadable records) and what it refused to re-publish, per reason."""

    republished: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    refused: dict[str, int] = field(default_factory=dict)


def refusal(
    letter: DeadLetter,
    destinations: Mapping[str, TopicSpec],
    erased: AbstractSet[uuid.UUID] = frozenset(),
) -> str | None:
    """Why `letter` must not go back to its source topic, or None: the topic must be one whose
    records are replayed, the original must now be a valid event of that topic, its key the one
    that event's producer writes, its drawing not erased (re-published after the erasure's
    tombstone, it would be the record compaction keeps), and not answered already (a rollout's
    candidate failed on it and the champion answered: the letter records the failure)."""
    if letter.answered_by is not None:
        return f"answered by v{letter.answered_by} (the letter records a candidate's failure)"
    spec = destinations.get(letter.source_topic)
    if spec is None:
        allowed = ", ".join(destinations)
        return f"{letter.source_topic!r} is not replayed (only {allowed})"
    try:
        event = spec.reader.from_bytes(letter.original)
    except InvalidEventError as exc:
        return f"still not a valid {exc.event_name}"
    if letter.source_key != _key_of(event):
        return f"its key is not the {spec.event.__name__}'s own"
    if getattr(event, "digit_id", None) in erased:
        return "its drawing was erased"
    return None


def _key_of(event: Event) -> bytes:
    if isinstance(event, RescoreTask):
        return task_key(event)
    if isinstance(event, RescoreSkipped):
        return str(event.job_id).encode()
    return str(getattr(event, "digit_id", None)).encode()


async def replay_dead_letters(
    kafka: KafkaSettings,
    *,
    topic: str | None,
    progress: Callable[[int, int], None] = lambda done, total: None,
    letters: TopicSpec = DIGITS_DEADLETTER,
    destinations: Mapping[str, TopicSpec] = REPLAYABLE,
) -> DeadLetterReplay:
    """Re-publish each dead letter (once: the group remembers how far it got) to its source,
    if `refusal` finds nothing against it."""
    consumer = AIOKafkaConsumer(
        **client_options(kafka),
        group_id=deadletter_group(topic),
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    try:
        await consumer.start()
        ledger = await read_topic(kafka, DIGITS_ERASED, DigitErased)
        erased = {e.digit_id for e in ledger}
        async with durable_producer(kafka) as producer:
            return await _replay_loop(
                consumer, producer, _Filter(letters, topic, destinations, erased), progress
            )
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class _Filter:
    letters: TopicSpec
    topic: str | None
    destinations: Mapping[str, TopicSpec]
    erased: AbstractSet[uuid.UUID] = frozenset()


async def _replay_loop(
    consumer: AIOKafkaConsumer,
    producer: AIOKafkaProducer,
    only: _Filter,
    progress: Callable[[int, int], None],
) -> DeadLetterReplay:
    letters = only.letters
    partitions = [TopicPartition(letters.name, p) for p in range(letters.partitions)]
    consumer.assign(partitions)
    beginnings = await consumer.beginning_offsets(partitions)
    for tp in partitions:  # resume where the last replay stopped
        committed = await consumer.committed(tp)
        consumer.seek(tp, beginnings[tp] if committed is None else committed)
    ends = await consumer.end_offsets(partitions)
    total = sum(await _remaining(consumer, ends))
    result = DeadLetterReplay()
    done = 0
    while any(await _remaining(consumer, ends)):
        batch = await consumer.getmany(*partitions, timeout_ms=1000)
        for records in batch.values():
            for record in records:
                done += 1
                await _replay_one(producer, _letter(record.value), only, result)
        positions = {tp: OffsetAndMetadata(await consumer.position(tp), "") for tp in partitions}
        await consumer.commit(positions)
        progress(done, total)
    return result


async def _replay_one(
    producer: AIOKafkaProducer, letter: DeadLetter | None, only: _Filter, result: DeadLetterReplay
) -> None:
    if letter is None or (only.topic and letter.source_topic != only.topic):
        result.skipped += 1
    elif reason := refusal(letter, only.destinations, only.erased):
        result.refused[reason] = result.refused.get(reason, 0) + 1
    else:
        await producer.send_and_wait(letter.source_topic, letter.original, key=letter.source_key)
        source = letter.source_topic
        result.republished[source] = result.republished.get(source, 0) + 1


async def _remaining(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> list[int]:
    return [max(0, ends[tp] - await consumer.position(tp)) for tp in ends]


def _letter(value: bytes | None) -> DeadLetter | None:
    try:
        return DeadLetter.from_bytes(value or b"")
    except InvalidEventError:
        return None
