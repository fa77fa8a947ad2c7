"""The history consumers: one batch subscriber per topic, group `history`.

A batch is written durably (MinIO put, Postgres commit) before its offsets are committed.
While Postgres or MinIO is down the write is retried with backoff and the service reports
not-ready; nothing is skipped. Records that are not valid events go to the dead-letter topic.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from mnistream_common.events import (
    DigitLabeled,
    DigitPredicted,
    DigitSubmitted,
    Event,
    InvalidEventError,
    ModelPromoted,
)
from mnistream_common.kafka import records_of, send_to_dead_letter
from mnistream_common.logs import get_logger
from mnistream_common.preprocessing import PreprocessError, peek
from mnistream_common.topics import (
    DIGITS_DEADLETTER,
    DIGITS_LABELED,
    DIGITS_PREDICTED,
    DIGITS_SUBMITTED,
    MODEL_PROMOTED,
    Groups,
    TopicSpec,
)
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential

from history_service.metrics import HistoryMetrics
from history_service.writer import HistoryWriter

log = get_logger(__name__)
SERVICE = "history-service"
E = TypeVar("E", bound=Event)


@dataclass
class Health:
    """Whether the last write reached storage; read by /readyz."""

    storage_ok: bool = True
    last_error: str | None = None
    written: dict[str, int] = field(default_factory=dict)


def _retryable(exc: BaseException) -> bool:
    return not isinstance(exc, (InvalidEventError, TypeError, KeyError, AssertionError))


def subscribe_all(
    broker: KafkaBroker,
    writer: HistoryWriter,
    health: Health,
    batch_size: int,
    retry_s: float,
    metrics: HistoryMetrics | None = None,
) -> list[Any]:
    """Register the four history subscribers on `broker`; returns them (for lag metrics)."""
    metrics = metrics or HistoryMetrics()
    subscribers: list[Any] = []
    deadletter = broker.publisher(DIGITS_DEADLETTER.name)
    plan: list[tuple[TopicSpec, type[Event], Callable[[Any], Awaitable[None]]]] = [
        (DIGITS_SUBMITTED, DigitSubmitted, writer.drawings),
        (DIGITS_PREDICTED, DigitPredicted, writer.predictions),
        (DIGITS_LABELED, DigitLabeled, writer.labels),
        (MODEL_PROMOTED, ModelPromoted, writer.promotions),
    ]
    for spec, event_type, write in plan:
        subscriber = broker.subscriber(
            spec.name,
            group_id=Groups.HISTORY,
            batch=True,
            max_records=batch_size,
            batch_timeout_ms=50,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        subscriber(_handler(spec, event_type, write, deadletter, health, retry_s, metrics))
        subscribers.append(subscriber)
    return subscribers


def _handler(
    spec: TopicSpec,
    event_type: type[E],
    write: Callable[[Sequence[E]], Awaitable[None]],
    deadletter: Any,
    health: Health,
    retry_s: float,
    metrics: HistoryMetrics,
) -> Callable[[KafkaMessage], Awaitable[None]]:
    async def handle(msg: KafkaMessage) -> None:
        records = records_of(msg)
        events, poison = _parse(records, event_type)
        if events:
            await _write_with_retry(write, events, health, spec.name, retry_s, metrics)
            _count(metrics, spec.name, events)
            log.info(
                "stored",
                topic=spec.name,
                count=len(events),
                digit_ids=[str(d) for e in events if (d := getattr(e, "digit_id", None))],
            )
        for record, error in poison:
            metrics.dead_letters.labels(topic=spec.name).inc()
            await send_to_dead_letter(deadletter, record, error, SERVICE)

    handle.__name__ = f"store_{spec.name.replace('.', '_')}"
    return handle


def _parse(records: Sequence[Any], event_type: type[E]) -> tuple[list[E], list[tuple[Any, str]]]:
    events: list[E] = []
    poison: list[tuple[Any, str]] = []
    for record in records:
        try:
            event = event_type.from_bytes(record.value or b"")
        except InvalidEventError as exc:
            poison.append((record, str(exc)))
            continue
        problem = _unreadable(event)
        if problem:
            poison.append((record, problem))
        else:
            events.append(event)
    return events, poison


def _unreadable(event: Event) -> str | None:
    """Why a submitted drawing's bytes are not an image, if they are not (header check only).

    The gateway never publishes such a drawing; another producer might. Stored, it would be a
    drawing no model can ever read, which no rescore could finish.
    """
    if not isinstance(event, DigitSubmitted):
        return None
    try:
        peek(event.image)
    except PreprocessError as exc:
        return f"the drawing {event.digit_id} is not a readable image: {exc}"
    return None


async def _write_with_retry(
    write: Callable[[Sequence[E]], Awaitable[None]],
    events: list[E],
    health: Health,
    topic: str,
    retry_s: float,
    metrics: HistoryMetrics,
) -> None:
    def before_sleep(state: Any) -> None:
        metrics.write_retries.labels(topic=topic).inc()
        _unhealthy(health, topic, state.outcome)

    async for attempt in AsyncRetrying(
        retry=retry_if_exception(_retryable),
        wait=wait_exponential(multiplier=0.2, max=5.0),
        stop=stop_after_delay(retry_s),
        reraise=True,
        before_sleep=before_sleep,
    ):
        with attempt:
            await write(events)
    health.storage_ok = True
    health.last_error = None
    health.written[topic] = health.written.get(topic, 0) + len(events)


def _count(metrics: HistoryMetrics, topic: str, events: Sequence[Event]) -> None:
    metrics.stored.labels(topic=topic).inc(len(events))
    for event in events:
        if isinstance(event, DigitPredicted):
            metrics.predictions.labels(
                model_version=str(event.model.version), kind=event.kind
            ).inc()


def _unhealthy(health: Health, topic: str, outcome: Any) -> None:
    error = outcome.exception() if outcome is not None else None
    health.storage_ok = False
    health.last_error = f"writing {topic} failed: {error!r}; retrying"
    log.warning("storage write failed; retrying with backoff", topic=topic, error=repr(error))
