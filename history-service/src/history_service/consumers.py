"""The history consumers: one batch subscriber per topic, group `history`.

A batch is written durably (MinIO put, Postgres commit) before its offsets are committed.
While Postgres or MinIO is down the write is retried with backoff and the service reports
not-ready; nothing is skipped. Records that are not valid events go to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from aiokafka.errors import CommitFailedError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from mnistream_common.consume import (
    DeadLetterRejects,
    Delivery,
    LogRejects,
    Rejected,
    Route,
    typed_topics,
    wake_on_records,
)
from mnistream_common.events import (
    DeadLetter,
    DigitErased,
    DigitLabeled,
    DigitPredicted,
    DigitSubmitted,
    Event,
    InvalidEventError,
    LedgerEntry,
    LedgerRecords,
    RescoreSkipped,
)
from mnistream_common.kafka import LONG_POLL_MS, make_broker, read_topic, rewind_group
from mnistream_common.logs import get_logger
from mnistream_common.metrics import report_lag
from mnistream_common.preprocessing import PREPROCESSING_VERSION, PreprocessError, peek, prepare
from mnistream_common.topics import (
    DIGITS_DEADLETTER,
    DIGITS_ERASED,
    DIGITS_LABELED,
    DIGITS_PREDICTED,
    DIGITS_SUBMITTED,
    HISTORY_TOPICS,
    MODEL_PROMOTED,
    RESCORE_SKIPPED,
    Groups,
    TopicSpec,
)
from sqlalchemy.exc import DBAPIError
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from history_service.admin import ReplayRefusedError
from history_service.metrics import HistoryMetrics
from history_service.settings import Settings
from history_service.writer import HistoryWriter, InputDrawing

log = get_logger(__name__)
SERVICE = "history-service"
# How long an idle consumer's poll waits for records (their arrival ends the wait).
BATCH_POLL_MS = 250
# How long a start waits to apply the erasure ledger before it consumes anyway.
ERASURES_FIRST_S = 30.0
E = TypeVar("E", bound=Event)
T = TypeVar("T")
Item = TypeVar("Item")  # an item of a batch (a delivery, or a delivery with its model input)
W = TypeVar("W")  # what the writer takes for it


@dataclass
class Health:
    """Whether the last write reached storage; read by /readyz."""

    storage_ok: bool = True
    last_error: str | None = None
    written: dict[str, int] = field(default_factory=dict)


def _retryable(exc: BaseException) -> bool:
    if is_data_error(exc):
        return False
    return not isinstance(exc, (InvalidEventError, TypeError, KeyError, AssertionError))


def is_data_error(exc: BaseException) -> bool:
    """PostgreSQL refused the data itself (SQLSTATE class 22, data exception, or 23, integrity
    constraint: a string too long for its column, an integer beyond int32, NaN in JSONB), so
    retrying cannot help; anything else (a connection refused, a timeout) is an outage."""
    if not isinstance(exc, DBAPIError):
        return False
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
    return sqlstate.startswith(("22", "23"))


def _refused_because(exc: DBAPIError) -> str:
    text = str(exc.orig).strip().splitlines()
    return f"PostgreSQL refused the row: {text[0] if text else type(exc.orig).__name__}"


def subscribe_all(
    broker: KafkaBroker,
    writer: HistoryWriter,
    health: Health,
    batch_size: int,
    retry_s: float,
    metrics: HistoryMetrics | None = None,
) -> list[Any]:
    """Register the history subscriber (one consumer of its seven topics) on `broker`; returns
    it in a list (for lag metrics)."""
    metrics = metrics or HistoryMetrics()
    rejects = DeadLetterRejects(
        broker.publisher(DIGITS_DEADLETTER.name), SERVICE, metrics.dead_letters
    )
    store = _Store(writer, health, metrics, retry_s)
    # Erasures first, so a batch holding a drawing and its erasure never stores the drawing;
    # then drawings: a batch holding a drawing and its prediction stores both rows in turn.
    routes: dict[str, Route[Any]] = {
        DIGITS_ERASED.name: Route(DigitErased, store.store_erasures),
        DIGITS_SUBMITTED.name: Route(DigitSubmitted, store.store_drawings, _unreadable),
        DIGITS_PREDICTED.name: Route(DigitPredicted, store.store_predictions),
        DIGITS_LABELED.name: Route(DigitLabeled, store.store_labels),
        MODEL_PROMOTED.name: Route(LedgerRecords, store.store_ledger),
        RESCORE_SKIPPED.name: Route(RescoreSkipped, store.store_skipped),
        # Never dead-letter a dead letter: a letter of a letter would loop.
        DIGITS_DEADLETTER.name: Route(
            DeadLetter, store.store_failures, rejects=LogRejects("a dead letter is not re-sent")
        ),
    }
    subscriber = wake_on_records(
        broker.subscriber(
            *routes,
            group_id=Groups.HISTORY,
            batch=True,
            max_records=batch_size,
            batch_timeout_ms=BATCH_POLL_MS,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_wait_ms=LONG_POLL_MS,
        )
    )
    subscriber(typed_topics(routes, rejects))
    return [subscriber]


@dataclass(frozen=True)
class _Store:
    """The subscribers' handlers: write a batch durably (retrying outages), then count it."""

    writer: HistoryWriter
    health: Health
    metrics: HistoryMetrics
    retry_s: float

    async def store_drawings(self, deliveries: list[Delivery[DigitSubmitted]]) -> list[Rejected]:
        """Store submitted drawings (objects, then rows) with their model inputs; a version 1
        drawing's input is made from its image (off the event loop)."""
        drawings, rejected = await asyncio.to_thread(with_model_inputs, deliveries)
        if drawings:
            stored, refused = await self._isolating(
                DIGITS_SUBMITTED, self.writer.drawings, drawings, lambda item: item[1]
            )
            rejected += [Rejected(delivery.record, why) for (delivery, _), why in refused]
            self._stored(DIGITS_SUBMITTED, [d.event for _, d in stored])
        return rejected

    async def store_predictions(self, deliveries: list[Delivery[DigitPredicted]]) -> list[Rejected]:
        """Store predictions and job progress."""
        return await self._store(DIGITS_PREDICTED, self.writer.predictions, deliveries)

    async def store_labels(self, deliveries: list[Delivery[DigitLabeled]]) -> list[Rejected]:
        """Store labels (the latest wins)."""
        return await self._store(DIGITS_LABELED, self.writer.labels, deliveries)

    async def store_ledger(self, deliveries: list[Delivery[LedgerEntry]]) -> list[Rejected]:
        """Store the ledger's promotions and rollout steps, with their offsets."""
        return await self._store(
            MODEL_PROMOTED, self.writer.ledger, deliveries, lambda d: (d.event, d.record.offset)
        )

    async def store_skipped(self, deliveries: list[Delivery[RescoreSkipped]]) -> list[Rejected]:
        """Count the drawings a job skipped as done, with why."""
        return await self._store(RESCORE_SKIPPED, self.writer.skipped, deliveries)

    async def store_failures(self, deliveries: list[Delivery[DeadLetter]]) -> list[Rejected]:
        """Keep the drawings a model version failed on during a rollout, for its verdict."""
        return await self._store(DIGITS_DEADLETTER, self.writer.failures, deliveries)

    async def store_erasures(self, deliveries: list[Delivery[DigitErased]]) -> list[Rejected]:
        """Remove erased drawings' rows and images, and keep them out from now on."""
        return await self._store(DIGITS_ERASED, self.writer.erasures, deliveries)

    async def _store(
        self,
        spec: TopicSpec,
        write: Callable[[Sequence[W]], Awaitable[None]],
        deliveries: list[Delivery[E]],
        row_of: Callable[[Delivery[E]], W] = lambda d: d.event,  # type: ignore[assignment,return-value]
    ) -> list[Rejected]:
        stored, refused = await self._isolating(spec, write, deliveries, row_of)
        self._stored(spec, [d.event for d in stored])
        return [Rejected(delivery.record, why) for delivery, why in refused]

    async def _isolating(
        self,
        spec: TopicSpec,
        write: Callable[[Sequence[W]], Awaitable[None]],
        items: list[Item],
        row_of: Callable[[Item], W],
    ) -> tuple[list[Item], list[tuple[Item, str]]]:
        """Write `items` (outages retried); if PostgreSQL refuses the data, halve the batch
        until the refused items are alone, write the rest, and return those with the reason:
        one bad record is dead-lettered instead of stalling its partition forever."""
        try:
            rows = [row_of(item) for item in items]
            await _write_with_retry(write, rows, self.health, spec.name, self.retry_s, self.metrics)
            return items, []
        except DBAPIError as exc:
            if not is_data_error(exc):
                raise
            if len(items) == 1:
                log.warning(
                    "a record was refused by PostgreSQL", topic=spec.name, error=str(exc.orig)
                )
                return [], [(items[0], _refused_because(exc))]
        middle = len(items) // 2
        first, first_refused = await self._isolating(spec, write, items[:middle], row_of)
        second, second_refused = await self._isolating(spec, write, items[middle:], row_of)
        return first + second, first_refused + second_refused

    def _stored(self, spec: TopicSpec, events: Sequence[Event]) -> None:
        _count(self.metrics, spec.name, events)
        log.info(
            "stored",
            topic=spec.name,
            count=len(events),
            digit_ids=[str(d) for e in events if (d := getattr(e, "digit_id", None))],
        )


def with_model_inputs(
    deliveries: Sequence[Delivery[DigitSubmitted]],
) -> tuple[list[tuple[Delivery[DigitSubmitted], InputDrawing]], list[Rejected]]:
    """Each drawing with its model input: the event's own (v2), or made from the image (v1).

    A version 1 drawing whose image cannot become an input is rejected: stored, it would be a
    drawing no model can ever read (the gateway never accepted one; another producer might).
    """
    ready: list[tuple[Delivery[DigitSubmitted], InputDrawing]] = []
    rejected: list[Rejected] = []
    for delivery in deliveries:
        event = delivery.event
        if event.model_input is not None and event.preprocessing_version is not None:
            ready.append(
                (delivery, InputDrawing(event, event.model_input, event.preprocessing_version))
            )
            continue
        try:
            model_input = prepare(event.image).model_input
        except PreprocessError as exc:
            reason = f"the drawing {event.digit_id} cannot become a model input: {exc}"
            rejected.append(Rejected(delivery.record, reason))
            continue
        ready.append((delivery, InputDrawing(event, model_input, PREPROCESSING_VERSION)))
    return ready, rejected


def _unreadable(event: DigitSubmitted) -> str | None:
    """Why a submitted drawing's bytes are not an image, if they are not (header check only).

    The gateway never publishes such a drawing; another producer might. Stored, it would be a
    drawing no model can ever read, which no rescore could finish.
    """
    try:
        peek(event.image)
    except PreprocessError as exc:
        return f"the drawing {event.digit_id} is not a readable image: {exc}"
    return None


async def _write_with_retry(
    write: Callable[[Sequence[T]], Awaitable[None]],
    events: list[T],
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


@dataclass
class Consumers:
    """The `history` group's consumers in this process: started, stopped, and replayed."""

    settings: Settings
    writer: HistoryWriter
    health: Health
    metrics: HistoryMetrics
    broker: KafkaBroker | None = None
    subscribers: list[Any] = field(default_factory=list)
    lag: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def build(self) -> KafkaBroker:
        """A broker with the four subscribers registered (nothing connects yet)."""
        broker = make_broker(self.settings, client_id=SERVICE, log_level=logging.DEBUG)
        self.subscribers = subscribe_all(
            broker,
            self.writer,
            self.health,
            self.settings.history_batch_size,
            self.settings.history_retry_max_seconds,
            self.metrics,
        )
        return broker

    async def start(self) -> None:
        """Apply the erasure ledger, then subscribe to the history topics and consume from the
        group's committed offsets."""
        try:
            await asyncio.wait_for(self.apply_erasure_ledger(), ERASURES_FIRST_S)
        except Exception as exc:  # Kafka not there yet: the group reads the ledger anyway
            log.warning("the erasure ledger was not applied before consuming", error=repr(exc))
        broker = self.build()
        await broker.start()
        self.broker = broker
        self.lag = asyncio.create_task(
            report_lag([(Groups.HISTORY, s) for s in self.subscribers], self.metrics.lag)
        )

    async def stop(self) -> None:
        """Finish the batches in hand, commit, and leave the group."""
        if self.lag is not None:
            self.lag.cancel()
        if self.broker is not None:
            await self.broker.stop()
        self.broker, self.lag = None, None

    async def replay(self, since: datetime | None) -> dict[str, int]:
        """Stop consuming, rewind the group to the beginning (or `since`), consume again."""
        async with self.lock:
            await self.stop()
            try:
                records = await self._rewind(since)
            finally:
                await self.start()  # which applies the erasure ledger first
        log.info("history replay", since=str(since) if since else "beginning", records=records)
        return records

    async def apply_erasure_ledger(self) -> None:
        """Apply the whole erasure ledger before the group reads anything (at every start, so
        after a replay's rewind too): replayed into an emptied database, read by a new group or
        into a database restored from a backup, an erased drawing's submission (until compaction
        removes it from digits.submitted) is refused on arrival instead of stored until its
        erasure is read again. The group re-reads the ledger too, which changes nothing."""
        ledger = await read_topic(self.settings, DIGITS_ERASED, DigitErased)
        # Only what the database does not hold yet: a start over a full database (every
        # restart) writes nothing. One whose image delete failed is redone by the group.
        new = await self.writer.unrecorded_erasures(ledger)
        for start in range(0, len(new), 1000):
            await self.writer.erasures(new[start : start + 1000])

    async def _rewind(self, since: datetime | None) -> dict[str, int]:
        # Leaving the group takes the coordinator a moment; another instance never leaves.
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(CommitFailedError),
                wait=wait_exponential(multiplier=0.2, max=2),
                stop=stop_after_delay(15),
                reraise=True,
            ):
                with attempt:
                    return await rewind_group(self.settings, Groups.HISTORY, HISTORY_TOPICS, since)
        except CommitFailedError as exc:
            raise ReplayRefusedError(
                "the `history` consumer group still has members: another history-service "
                "instance is consuming; stop the others, then replay"
            ) from exc
        raise AssertionError("unreachable: tenacity reraises")
