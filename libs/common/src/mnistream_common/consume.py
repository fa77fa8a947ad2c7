"""Typed subscribers: records become events in one place, and what cannot be used is set aside
there too.

    Kafka records ──parse──▶ Delivery[E] (the event and its record) ──▶ handler(deliveries)
         │                                                                │
         └── not a valid E, or fails the subscriber's check ──┬───────────┘ data errors it found
                                                              ▼
                                      the subscriber's policy: dead letter, or log and skip

A handler receives typed deliveries, does its work, and returns the deliveries it found it
cannot use (`Rejected`, with a reason a person can act on). Everything rejected, by the parser
or by the handler, goes through the subscriber's policy once the handler has finished, so a
batch that fails (an outage: the handler raises) is redelivered whole and dead-letters nothing
twice. Group consumers dead-letter; readers that every instance runs (the ledger, the gateway's
predictions) log and skip, because N copies of one dead letter help nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import chain
from typing import Any, Generic, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.subscriber.usecase import BatchSubscriber
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import AttributeValue
from prometheus_client import Counter

from mnistream_common import tracing
from mnistream_common.events import Event, InvalidEventError, Parser
from mnistream_common.kafka import Record, send_to_dead_letter
from mnistream_common.logs import get_logger

E = TypeVar("E", bound=Event)
log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery(Generic[E]):
    """An event and the Kafka record it arrived in; with tracing on, the context of the span
    that handles it in the record's trace (what an event made from this one carries on)."""

    event: E
    record: Record
    trace: Context | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that cannot be processed, and why; when a model failed on it, which one, in
    which rollout, and which version answered it instead (see `DeadLetter`)."""

    record: Record
    reason: str
    failed: Failure | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """A model version failed on a record."""

    model_version: int
    rollout_id: uuid.UUID | None = None
    answered_by: int | None = None


Check = Callable[[E], "str | None"]
"""A rule beyond the schema: why an event cannot be used, or None when it can."""
BatchHandler = Callable[[list[Delivery[E]]], Awaitable[Sequence[Rejected]]]
MessageHandler = Callable[[KafkaMessage], Awaitable[None]]


def records_of(message: KafkaMessage) -> tuple[Record, ...]:
    """The consumer records behind a FastStream message, batch or not."""
    raw = message.raw_message
    # aiokafka batches arrive as a tuple; FastStream's TestKafkaBroker delivers a list.
    return tuple(raw) if isinstance(raw, tuple | list) else (raw,)


def parse_records(
    records: Sequence[Record], event_type: Parser[E], check: Check[E] | None = None
) -> tuple[list[Delivery[E]], list[Rejected]]:
    """Split records into deliveries of `event_type` and rejected records (with the reason).

    A tombstone (a record with no value) is neither: it is an erasure's mark on a compacted
    topic (digits.submitted), left for compaction to remove the drawing it follows.
    """
    deliveries: list[Delivery[E]] = []
    rejected: list[Rejected] = []
    for record in records:
        if record.value is None:
            continue
        try:
            event = event_type.from_bytes(record.value)
        except InvalidEventError as exc:
            rejected.append(Rejected(record, str(exc)))
            continue
        problem = check(event) if check is not None else None
        if problem:
            rejected.append(Rejected(record, problem))
        else:
            deliveries.append(Delivery(event, record))
    return deliveries, rejected


async def handled(handler: BatchHandler[E], deliveries: list[Delivery[E]]) -> Sequence[Rejected]:
    """Call the handler; with tracing on, inside the spans of `traced`."""
    if not tracing.enabled() or not any(_carries_trace(d.record) for d in deliveries):
        return await handler(deliveries)
    with traced(deliveries) as (batch, spans):
        try:
            rejected = await handler(batch)
        except Exception as exc:  # a failure, not a cancellation (a service stopping)
            for each in spans.values():
                each.record_exception(exc)
                tracing.failed(each, f"{type(exc).__name__}: {exc}")
            raise
        for item in rejected:
            if (refused := spans.get(id(item.record))) is not None:
                tracing.failed(refused, item.reason)
        return rejected


def _carries_trace(record: Record) -> bool:
    return any(key == "traceparent" for key, _ in record.headers or ())


@contextlib.contextmanager
def traced(
    deliveries: list[Delivery[E]],
) -> Iterator[tuple[list[Delivery[E]], dict[int, trace.Span]]]:
    """The spans of one batch, current for the block. Each record that carries a trace gets a
    span in that trace, which its delivery hands on (`Delivery.trace`). A batch of several
    records also gets a span of its own that links every record's trace (and each record's
    span links back to it); a batch of one is its record's span. Yields the deliveries and
    the records' spans by `id(record)`; every span ends with the block."""
    tracer = tracing.tracer()
    topic = deliveries[0].record.topic
    name = f"{topic} process"
    contexts = [tracing.record_context(d.record.headers) for d in deliveries]
    common: dict[str, AttributeValue] = {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.batch.message_count": len(deliveries),
    }
    if len(deliveries) == 1 and contexts[0] is not None:
        record = deliveries[0].record
        with tracer.start_as_current_span(
            name,
            context=contexts[0],
            kind=SpanKind.CONSUMER,
            attributes=common | _where(record),
            record_exception=False,  # `handled` records it, on every record's span alike
            set_status_on_exception=False,
        ) as alone:
            yield (
                [replace(deliveries[0], trace=trace.set_span_in_context(alone))],
                {id(record): alone},
            )
        return
    links = [tracing.link_to(c) for c in contexts if c is not None]
    spans: dict[int, trace.Span] = {}
    with tracer.start_as_current_span(
        name, kind=SpanKind.CONSUMER, links=links, attributes=common
    ) as batch:
        back = [Link(batch.get_span_context())]
        handed: list[Delivery[E]] = []
        try:
            for delivery, context in zip(deliveries, contexts, strict=True):
                if context is None:
                    handed.append(delivery)
                    continue
                record = delivery.record
                each = tracer.start_span(
                    name,
                    context=context,
                    kind=SpanKind.CONSUMER,
                    links=back,
                    attributes=common | _where(record),
                )
                spans[id(record)] = each
                handed.append(replace(delivery, trace=trace.set_span_in_context(each)))
            yield handed, spans
        finally:
            for each in spans.values():
                each.end()


def _where(record: Record) -> dict[str, AttributeValue]:
    return {
        "messaging.kafka.destination.partition": record.partition,
        "messaging.kafka.message.offset": record.offset,
        "messaging.kafka.message.key": (record.key or b"").decode(errors="replace"),
    }


class RejectPolicy(Protocol):
    """What a subscriber does with the records it cannot use."""

    async def __call__(self, rejected: Sequence[Rejected]) -> None: ...


class Publisher(Protocol):
    """The part of a FastStream publisher that sending needs."""

    async def publish(
        self, message: Any, *, key: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Any: ...


@dataclass(frozen=True)
class DeadLetterRejects:
    """Send each rejected record to digits.deadletter (acks=all), counted."""

    publisher: Publisher
    service: str
    counter: Counter | None = None

    async def __call__(self, rejected: Sequence[Rejected]) -> None:
        """Publish one dead letter per rejected record; return once Kafka has them all."""
        for item in rejected:
            if self.counter is not None:
                reason = item.reason.split(":")[0][:40]
                self.counter.labels(topic=item.record.topic, reason=reason).inc()
            failed = item.failed
            await send_to_dead_letter(
                self.publisher,
                item.record,
                item.reason,
                self.service,
                model_version=failed.model_version if failed else None,
                rollout_id=failed.rollout_id if failed else None,
                answered_by=failed.answered_by if failed else None,
            )


@dataclass(frozen=True)
class LogRejects:
    """Log and skip: for readers every instance runs, where one dead letter is someone else's."""

    why: str

    async def __call__(self, rejected: Sequence[Rejected]) -> None:
        """Log each rejected record once, with where it is."""
        for item in rejected:
            log.warning(
                "ignoring a record",
                topic=item.record.topic,
                partition=item.record.partition,
                offset=item.record.offset,
                error=item.reason,
                why=self.why,
            )


def typed_batch(
    event_type: Parser[E], rejects: RejectPolicy, *, check: Check[E] | None = None
) -> Callable[[BatchHandler[E]], MessageHandler]:
    """Turn `handler(deliveries) -> rejected` into a FastStream subscriber callback.

    Works for batch and single-record subscribers alike (a single record is a batch of one).
    The handler is not called when nothing in the batch is usable.
    """

    def decorate(handler: BatchHandler[E]) -> MessageHandler:
        async def consume(msg: KafkaMessage) -> None:
            deliveries, rejected = parse_records(records_of(msg), event_type, check)
            if deliveries:
                rejected.extend(await handled(handler, deliveries))
            if rejected:
                await rejects(rejected)

        # FastStream names the subscriber (and its AsyncAPI operation) after the callback.
        consume.__name__ = getattr(handler, "__name__", type(handler).__name__)
        consume.__qualname__ = getattr(handler, "__qualname__", consume.__name__)
        consume.__doc__ = handler.__doc__
        return consume

    return decorate


@dataclass(frozen=True)
class Route(Generic[E]):
    """What one topic's records become, and who handles them."""

    event_type: Parser[E]
    handler: BatchHandler[E]
    check: Check[E] | None = None
    rejects: RejectPolicy | None = None  # the subscriber's unless set (the dead letters' own)


def typed_topics(routes: Mapping[str, Route[Any]], rejects: RejectPolicy) -> MessageHandler:
    """One FastStream callback for a subscriber of several topics: each topic's records are
    parsed into its route's event type and handed to its handler, in the order of `routes`.
    What a route rejects goes through its own policy if it has one, else `rejects`.

    One consumer instead of one per topic: a service reading four topics polls, fetches and
    heartbeats once, not four times (a quarter of its idle CPU and of its Kafka requests).
    """

    async def consume(msg: KafkaMessage) -> None:
        by_topic: dict[str, list[Record]] = {}
        for record in records_of(msg):
            by_topic.setdefault(record.topic, []).append(record)
        rejected: dict[int, tuple[RejectPolicy, list[Rejected]]] = {}

        def reject(policy: RejectPolicy | None, items: Sequence[Rejected]) -> None:
            policy = policy or rejects
            if items:
                rejected.setdefault(id(policy), (policy, []))[1].extend(items)

        for topic, route in routes.items():
            deliveries, bad = parse_records(by_topic.pop(topic, []), route.event_type, route.check)
            reject(route.rejects, bad)
            if deliveries:
                reject(route.rejects, await handled(route.handler, deliveries))
        for topic, records in by_topic.items():  # subscribed to a topic without a route
            reject(None, [Rejected(r, f"no handler for records of topic {topic}") for r in records])
        for policy, items in rejected.values():
            await policy(items)

    consume.__name__ = "consume_" + "_".join(t.replace(".", "_") for t in routes)
    return consume


@dataclass
class Backoff:
    """How long a consumer pauses before a batch that failed for a reason not its records' (a
    model failing on everything, a service it needs unreachable) is read again: doubling from
    `first_s` up to `max_s`, back to none after a success. Redelivering at once would be a hot
    loop."""

    first_s: float = 0.5
    max_s: float = 30.0
    failures: int = 0
    last_s: float = 0.0

    async def wait(self) -> float:
        """Pause for the next delay; returns it."""
        self.last_s = min(self.max_s, self.first_s * float(2**self.failures))
        self.failures += 1
        await asyncio.sleep(self.last_s)
        return self.last_s

    def reset(self) -> None:
        self.failures = 0


def wake_on_records(subscriber: BatchSubscriber) -> BatchSubscriber:
    """A batch subscriber that handles records as soon as they arrive.

    FastStream's batch subscriber (0.7.8) waits up to `batch_timeout_ms` for records, and after
    a wait that found none it sleeps `batch_timeout_ms` again: a record that arrived during that
    sleep waited for it (up to 20 ms per drawing at the worker's old setting, on the answer's
    path), and a short timeout made idle workers poll many times a second. aiokafka's wait
    already ends when records arrive, so here the wait is the only pause: a long one costs an
    idle consumer nothing and a record no time. Should an empty answer ever come back early,
    the rest of the wait is paused out, so an idle loop cannot turn hot.
    """
    wait_s = subscriber.batch_timeout_ms / 1000

    async def get_msg(consumer: AIOKafkaConsumer) -> tuple[ConsumerRecord[Any, Any], ...]:
        started = time.monotonic()
        messages = await consumer.getmany(
            timeout_ms=subscriber.batch_timeout_ms, max_records=subscriber.max_records
        )
        if messages:
            return tuple(chain.from_iterable(messages.values()))
        if (left := wait_s - (time.monotonic() - started)) > 0:
            await asyncio.sleep(left)
        return ()

    subscriber.get_msg = get_msg  # type: ignore[method-assign]
    return subscriber
