"""`mnistream replay deadletter` on the real Kafka: each letter back to its source topic, once,
and a replay filtered to one topic never moves past the letters of another."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from mnistream_cli.replay import replay_dead_letters
from mnistream_common.events import DeadLetter, DigitLabeled, utc_now
from mnistream_common.kafka import client_options
from mnistream_common.settings import KafkaSettings
from mnistream_common.topics import DIGITS_DEADLETTER, DIGITS_LABELED, MODEL_PROMOTED, TopicSpec

from tests.helpers import promotion

pytestmark = pytest.mark.integration


@dataclasses.dataclass
class Topics:
    letters: TopicSpec
    first: str
    second: str

    @property
    def destinations(self) -> dict[str, TopicSpec]:
        """The two throwaway source topics, replayable as digits.labeled is."""
        return {
            name: dataclasses.replace(DIGITS_LABELED, name=name)
            for name in (self.first, self.second)
        }


@pytest.fixture
async def topics(kafka: KafkaSettings) -> AsyncIterator[Topics]:
    """A throwaway dead-letter topic (2 partitions) and two source topics, deleted afterwards."""
    run = uuid.uuid4().hex[:12]
    made = Topics(
        letters=dataclasses.replace(DIGITS_DEADLETTER, name=f"it-dl-{run}", partitions=2),
        first=f"it-dl-first-{run}",
        second=f"it-dl-second-{run}",
    )
    names = [made.letters.name, made.first, made.second]
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(made.letters.name, 2, 1)] + [NewTopic(n, 1, 1) for n in names[1:]]
        )
        assert all(error == 0 for _, error, *_ in response.topic_errors), response
        yield made
        await admin.delete_topics(names)
    finally:
        await admin.close()


def letter(source: str, n: int) -> DeadLetter:
    """A letter whose original is a label that reads again (the consumer was fixed)."""
    label = DigitLabeled(digit_id=uuid.uuid4(), label=n % 10, labeled_at=utc_now())
    return DeadLetter(
        source_topic=source,
        source_partition=0,
        source_offset=n,
        source_key=str(label.digit_id).encode(),
        original=label.to_bytes(),
        error="test: could not be read",
        service="tests",
        failed_at=utc_now(),
    )


async def produce(servers: KafkaSettings, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(**client_options(servers), acks="all")
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send_and_wait(topic, value, partition=i % 2)
    finally:
        await producer.stop()


async def read_all(servers: KafkaSettings, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    consumer = AIOKafkaConsumer(**client_options(servers), enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        records = []
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=2000)
            records += [(r.key, r.value) for r in batch.get(tp, [])]
        return records
    finally:
        await consumer.stop()


async def test_replay_by_topic_republishes_each_letter_once_and_skips_none_for_good(
    kafka: KafkaSettings, topics: Topics
) -> None:
    servers = kafka
    firsts = [letter(topics.first, n) for n in range(4)]
    seconds = [letter(topics.second, n) for n in range(3)]
    mixed = [e.to_bytes() for pair in zip(firsts, seconds, strict=False) for e in pair]
    await produce(servers, topics.letters.name, [*mixed, firsts[3].to_bytes(), b"not a letter"])

    letters, destinations = topics.letters, topics.destinations
    first = await replay_dead_letters(
        servers, topic=topics.first, letters=letters, destinations=destinations
    )
    assert first.republished == {topics.first: 4}
    assert first.skipped == 4  # the other topic's three and the unreadable record

    second = await replay_dead_letters(
        servers, topic=topics.second, letters=letters, destinations=destinations
    )
    assert second.republished == {topics.second: 3}, "the first replay must not eat these"

    again = await replay_dead_letters(
        servers, topic=topics.first, letters=letters, destinations=destinations
    )
    assert again.republished == {}, "each letter is re-published once per filter"

    assert sorted(await read_all(servers, topics.first)) == sorted(
        (e.source_key, e.original) for e in firsts
    )
    assert sorted(await read_all(servers, topics.second)) == sorted(
        (e.source_key, e.original) for e in seconds
    )


async def test_a_forged_letter_naming_the_ledger_never_becomes_a_promotion(
    kafka: KafkaSettings, topics: Topics
) -> None:
    servers = kafka
    forged = letter(MODEL_PROMOTED.name, 0).model_copy(
        update={
            "source_key": b"mnist-digits",
            "original": promotion(b"forged model", version=999).to_bytes(),
        }
    )
    still_bad = letter(topics.first, 1).model_copy(update={"original": b'{"label": 42}'})
    wrong_key = letter(topics.first, 2).model_copy(update={"source_key": b"another-drawing"})
    await produce(
        servers, topics.letters.name, [e.to_bytes() for e in (forged, still_bad, wrong_key)]
    )
    ledger = TopicPartition(MODEL_PROMOTED.name, 0)
    before = await end_offset(servers, ledger)

    result = await replay_dead_letters(
        servers, topic=None, letters=topics.letters, destinations=topics.destinations
    )

    assert result.republished == {}
    assert sorted(result.refused) == [
        f"'model.promoted' is not replayed (only {topics.first}, {topics.second})",
        "its key is not the DigitLabeled's own",
        "still not a valid DigitLabeled",
    ]
    assert await end_offset(servers, ledger) == before
    assert await read_all(servers, topics.first) == []


async def end_offset(servers: KafkaSettings, tp: TopicPartition) -> int:
    consumer = AIOKafkaConsumer(**client_options(servers))
    await consumer.start()
    try:
        ends: dict[TopicPartition, int] = await consumer.end_offsets([tp])
        return ends[tp]
    finally:
        await consumer.stop()
