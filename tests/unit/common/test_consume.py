"""The typed subscriber seam: a batch splits into deliveries and rejected records losing none, the
handler sees only valid events, and whatever is rejected goes through the subscriber's policy
once the handler has succeeded (never twice, and never for a batch that will be redelivered)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest
from mnistream_common.consume import (
    DeadLetterRejects,
    Delivery,
    Rejected,
    parse_records,
    typed_batch,
)
from mnistream_common.events import DeadLetter, DigitLabeled, DigitSubmitted, ModelPromoted

from tests.helpers import FakePublisher, deliver, promotion, records, submitted, tiny_onnx_model


def test_good_and_invalid_records_are_split_and_none_is_lost() -> None:
    good = [submitted(), submitted()]
    foreign = json.loads(good[0].to_bytes())
    foreign["schema_version"] = 99
    batch = records(
        [
            good[0].to_bytes(),
            b"\xff\xfe not json",
            b"",
            good[1].to_bytes(),
            json.dumps(foreign).encode(),
            b'{"digit_id": "not-a-uuid"}',
        ]
    )

    deliveries, rejected = parse_records(batch, DigitSubmitted)

    assert [d.event for d in deliveries] == good
    assert [d.record.offset for d in deliveries] == [0, 3]
    assert [r.record.offset for r in rejected] == [1, 2, 4, 5]
    assert all(r.reason.startswith("not a valid DigitSubmitted: ") for r in rejected)
    reasons = {r.record.offset: r.reason for r in rejected}
    assert "schema_version" in reasons[4]
    assert "digit_id" in reasons[5]


def test_a_tombstone_is_neither_an_event_nor_a_rejected_record() -> None:
    # An erasure's mark on digits.submitted: compaction removes the drawing it follows, and no
    # consumer should dead-letter it (an empty value, by contrast, is a broken record).
    good = submitted()
    deliveries, rejected = parse_records(records([None, good.to_bytes(), b""]), DigitSubmitted)
    assert [d.record.offset for d in deliveries] == [1]
    assert [r.record.offset for r in rejected] == [2]


def test_an_event_of_another_type_is_rejected_by_name() -> None:
    labeled = DigitLabeled.model_validate_json(
        '{"digit_id": "01953c1e-8a4b-7c2d-9e0f-1a2b3c4d5e6f", "label": 3,'
        ' "labeled_at": "2026-03-01T12:00:00Z"}'
    )
    good = promotion(tiny_onnx_model(1), 1)

    deliveries, rejected = parse_records(
        records([labeled.to_bytes(), good.to_bytes()], topic="model.promoted"), ModelPromoted
    )

    assert [d.event for d in deliveries] == [good]
    assert [r.record.offset for r in rejected] == [0]
    assert rejected[0].reason.startswith("not a valid ModelPromoted")


def test_a_check_beyond_the_schema_rejects_with_its_reason() -> None:
    events = [submitted(), submitted()]

    def only_the_first(event: DigitSubmitted) -> str | None:
        return None if event == events[0] else f"{event.digit_id} is not the first"

    deliveries, rejected = parse_records(
        records([e.to_bytes() for e in events]), DigitSubmitted, only_the_first
    )

    assert [d.event for d in deliveries] == [events[0]]
    assert [r.reason for r in rejected] == [f"{events[1].digit_id} is not the first"]


def test_an_empty_batch() -> None:
    assert parse_records([], DigitSubmitted) == ([], [])


class Handled:
    """A handler that records what it saw, rejects one event, or fails like an outage."""

    def __init__(self, *, reject_offset: int | None = None, fail: bool = False) -> None:
        self.seen: list[list[int]] = []
        self.reject_offset = reject_offset
        self.fail = fail

    async def __call__(self, deliveries: list[Delivery[DigitSubmitted]]) -> Sequence[Rejected]:
        self.seen.append([d.record.offset for d in deliveries])
        if self.fail:
            raise ConnectionError("kafka is down")
        return [
            Rejected(d.record, "cannot be read")
            for d in deliveries
            if d.record.offset == self.reject_offset
        ]


def letters(publisher: FakePublisher) -> list[DeadLetter]:
    return [DeadLetter.from_bytes(body) for body in publisher.bodies]


async def test_invalid_records_and_the_handlers_rejects_are_dead_lettered_after_it() -> None:
    dead = FakePublisher()
    handler = Handled(reject_offset=2)
    callback = typed_batch(DigitSubmitted, DeadLetterRejects(dead, "svc"))(handler)
    batch = records([submitted().to_bytes(), b"{oops", submitted().to_bytes()])

    await deliver(callback, batch)

    assert handler.seen == [[0, 2]]
    assert [(d.source_offset, d.error) for d in letters(dead)] == [
        (1, letters(dead)[0].error),
        (2, "cannot be read"),
    ]
    assert letters(dead)[0].error.startswith("not a valid DigitSubmitted")
    assert {d.service for d in letters(dead)} == {"svc"}


async def test_a_failing_handler_dead_letters_nothing_so_the_redelivery_does_it_once() -> None:
    dead = FakePublisher()
    callback = typed_batch(DigitSubmitted, DeadLetterRejects(dead, "svc"))(Handled(fail=True))

    with pytest.raises(ConnectionError):
        await deliver(callback, records([b"{oops", submitted().to_bytes()]))

    assert dead.sent == []


async def test_the_handler_is_not_called_when_nothing_is_usable() -> None:
    dead, handler = FakePublisher(), Handled()
    callback = typed_batch(DigitSubmitted, DeadLetterRejects(dead, "svc"))(handler)

    await deliver(callback, records([b"", b"[]"]))

    assert handler.seen == []
    assert [d.source_offset for d in letters(dead)] == [0, 1]


def test_the_callback_keeps_the_handlers_name_for_the_asyncapi_document() -> None:
    async def store_drawings(deliveries: list[Delivery[DigitSubmitted]]) -> list[Rejected]:
        return []

    callback = typed_batch(DigitSubmitted, DeadLetterRejects(FakePublisher(), "svc"))(
        store_drawings
    )

    assert callback.__name__ == "store_drawings"


class _Clock:
    """time.monotonic for the module under test, and the sleeps it asked for."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class _Consumer:
    """getmany as aiokafka's: records at once if there are any, else empty after `waits` s."""

    def __init__(self, clock: _Clock, answers: list[dict[str, list[str]]], waits: float) -> None:
        self.clock, self.answers, self.waits = clock, answers, waits
        self.calls: list[tuple[int, int]] = []

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[str, list[str]]:
        self.calls.append((timeout_ms, max_records))
        answer = self.answers.pop(0)
        if not answer:
            self.clock.now += self.waits
        return answer


def _woken(clock: _Clock, monkeypatch: pytest.MonkeyPatch) -> Any:
    import anyio
    from faststream.kafka import KafkaBroker
    from mnistream_common import consume

    monkeypatch.setattr(consume, "time", clock)
    monkeypatch.setattr(asyncio, "sleep", clock.sleep)
    monkeypatch.setattr(anyio, "sleep", clock.sleep)  # what FastStream's own get_msg sleeps with
    subscriber = KafkaBroker().subscriber(
        "digits.submitted", group_id="g", batch=True, batch_timeout_ms=500, max_records=64
    )
    return consume.wake_on_records(subscriber)


async def test_records_that_arrive_are_handed_on_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    subscriber = _woken(clock, monkeypatch)
    consumer = _Consumer(clock, [{"p0": ["a", "b"], "p1": ["c"]}], waits=0.5)

    assert await subscriber.get_msg(consumer) == ("a", "b", "c")
    assert consumer.calls == [(500, 64)]
    assert clock.slept == []


async def test_a_wait_that_found_nothing_is_not_followed_by_a_sleep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FastStream slept batch_timeout_ms after it: a record arriving then waited for it."""
    clock = _Clock()
    subscriber = _woken(clock, monkeypatch)
    consumer = _Consumer(clock, [{}, {"p0": ["a"]}], waits=0.5)

    assert await subscriber.get_msg(consumer) == ()
    assert clock.slept == []
    assert await subscriber.get_msg(consumer) == ("a",)


async def test_an_empty_answer_that_came_early_pauses_for_the_rest_of_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should getmany ever answer at once with nothing, the loop still does not turn hot."""
    clock = _Clock()
    subscriber = _woken(clock, monkeypatch)
    consumer = _Consumer(clock, [{}], waits=0.1)

    assert await subscriber.get_msg(consumer) == ()
    assert clock.slept == [pytest.approx(0.4)]


async def test_faststreams_consume_loop_polls_through_the_woken_get_msg(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loop of the pinned FastStream calls the instance's get_msg: an empty poll is followed
    at once by the next (its own get_msg would sleep batch_timeout_ms in between)."""
    from aiokafka.errors import ConsumerStoppedError

    clock = _Clock()
    subscriber = _woken(clock, monkeypatch)
    consumer = _Consumer(clock, [{}, {}], waits=0.5)
    answers = consumer.getmany

    async def then_stop(*, timeout_ms: int, max_records: int) -> dict[str, list[str]]:
        if not consumer.answers:
            raise ConsumerStoppedError
        return await answers(timeout_ms=timeout_ms, max_records=max_records)

    consumer.getmany = then_stop  # type: ignore[method-assign]
    subscriber.running = True

    await subscriber._run_consume_loop(consumer)

    assert len(consumer.calls) == 2
    assert clock.slept == []
