"""The history consumers on FastStream's in-memory broker, with a fake writer at the edge: valid
events are written, poison goes to the dead letters with its coordinates, an outage is retried
until the write succeeds, and nothing is lost."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from history_service.consumers import Health, subscribe_all
from history_service.writer import HistoryWriter
from mnistream_common.consume import records_of
from mnistream_common.events import DeadLetter, DigitLabeled, InvalidEventError, utc_now
from mnistream_common.topics import DIGITS_DEADLETTER, DIGITS_LABELED, MODEL_PROMOTED
from sqlalchemy.exc import DBAPIError

from tests.helpers import promotion, tiny_onnx_model


@dataclass
class FakeWriter:
    """Keeps what would be written; fails `outages` times first, like Postgres restarting."""

    written: dict[str, list[Any]] = field(default_factory=dict)
    outages: int = 0
    refused_labels: set[int] = field(default_factory=set)  # digits PostgreSQL "refuses"
    attempts: int = 0
    letters: list[DeadLetter] = field(default_factory=list)

    async def _write(self, kind: str, events: Sequence[Any]) -> None:
        self.attempts += 1
        if self.outages > 0:
            self.outages -= 1
            raise ConnectionRefusedError("postgres is restarting")
        if any(getattr(e, "label", None) in self.refused_labels for e in events):
            raise DBAPIError("INSERT ...", {}, _RefusedError("value too long for type varchar(64)"))
        self.written.setdefault(kind, []).extend(events)

    async def drawings(self, events: Sequence[Any]) -> None:
        await self._write("drawings", events)

    async def predictions(self, events: Sequence[Any]) -> None:
        await self._write("predictions", events)

    async def labels(self, events: Sequence[Any]) -> None:
        await self._write("labels", events)

    async def ledger(self, entries: Sequence[Any]) -> None:
        await self._write("ledger", [entry for entry, _offset in entries])

    async def failures(self, letters: Sequence[DeadLetter]) -> None:
        # Apart from `written`: the subscriber reads back the letters it sends.
        self.letters.extend(letters)


class _RefusedError(Exception):
    """What the asyncpg adapter raises for a data exception (SQLSTATE class 22)."""

    sqlstate = "22001"


@dataclass
class History:
    broker: KafkaBroker
    writer: FakeWriter
    health: Health
    dead: list[DeadLetter]


@pytest.fixture
async def history() -> AsyncIterator[History]:
    broker = KafkaBroker("kafka.invalid:9092")
    writer, health = FakeWriter(), Health()
    dead: list[DeadLetter] = []

    @broker.subscriber(DIGITS_DEADLETTER.name, group_id="fake-replay")
    async def dead_letters(msg: KafkaMessage) -> None:
        for record in records_of(msg):
            with contextlib.suppress(InvalidEventError):  # a test's own garbage
                dead.append(DeadLetter.from_bytes(record.value or b""))

    subscribe_all(broker, cast(HistoryWriter, writer), health, batch_size=100, retry_s=10.0)
    async with TestKafkaBroker(broker):
        yield History(broker, writer, health, dead)


def label(digit: int) -> DigitLabeled:
    return DigitLabeled(digit_id=uuid.uuid4(), label=digit, labeled_at=utc_now())


async def test_valid_events_are_written_and_poison_dead_lettered(history: History) -> None:
    good = [label(1), label(2), label(3)]
    bodies = [
        good[0].to_bytes(),
        b"{oops",
        good[1].to_bytes(),
        b'{"label": 11}',
        good[2].to_bytes(),
    ]

    await history.broker.publish_batch(*bodies, topic=DIGITS_LABELED.name)

    assert history.writer.written == {"labels": good}
    assert [d.original for d in history.dead] == [b"{oops", b'{"label": 11}']
    for letter in history.dead:
        assert letter.source_topic == DIGITS_LABELED.name
        assert letter.service == "history-service"
        assert letter.error.startswith("not a valid DigitLabeled")
    assert len(history.writer.written["labels"]) + len(history.dead) == len(bodies)
    assert history.health.written[DIGITS_LABELED.name] == 3


async def test_an_outage_is_retried_until_the_batch_is_written(history: History) -> None:
    history.writer.outages = 1
    event = promotion(tiny_onnx_model(1), 1)

    await history.broker.publish_batch(event.to_bytes(), topic=MODEL_PROMOTED.name)

    assert history.writer.written == {"ledger": [event]}
    assert history.health.storage_ok
    assert history.health.last_error is None


async def test_an_event_of_another_type_on_a_topic_is_poison(history: History) -> None:
    wrong = label(4)

    await history.broker.publish_batch(wrong.to_bytes(), topic=MODEL_PROMOTED.name)

    assert history.writer.written == {}
    [letter] = history.dead
    assert letter.original == wrong.to_bytes()
    assert "not a valid ModelPromoted" in letter.error


async def test_a_record_postgres_refuses_is_dead_lettered_and_the_rest_written(
    history: History,
) -> None:
    history.writer.refused_labels = {6}
    events = [label(d) for d in (1, 2, 6, 3, 4, 5, 7, 8)]

    await history.broker.publish_batch(*(e.to_bytes() for e in events), topic=DIGITS_LABELED.name)

    assert history.writer.written == {"labels": [e for e in events if e.label != 6]}
    [letter] = history.dead
    assert letter.original == events[2].to_bytes()
    assert letter.error == "PostgreSQL refused the row: value too long for type varchar(64)"
    assert history.health.storage_ok
    assert history.writer.attempts < 2 * len(events), "halved, not retried as an outage"


async def test_dead_letters_naming_a_rollout_reach_the_writer_and_bad_ones_stay_put(
    history: History,
) -> None:
    """history-service reads digits.deadletter for the failures of rollouts' versions; a record
    there that is not a valid letter is logged and skipped, never dead-lettered again (a letter
    of a letter would loop)."""
    digit_id = uuid.uuid4()
    failure = DeadLetter(
        source_topic="digits.submitted",
        source_partition=3,
        source_offset=7,
        source_key=str(digit_id).encode(),
        original=b"{}",
        error="the model failed on this drawing: broken candidate",
        service="inference-worker",
        failed_at=utc_now(),
        model_version=2,
        rollout_id=uuid.uuid4(),
        answered_by=1,
    )

    await history.broker.publish_batch(
        failure.to_bytes(), b"{not a letter", topic=DIGITS_DEADLETTER.name
    )

    assert history.writer.letters == [failure]
    assert history.dead == [failure]  # the one published, and no letter of the bad record
