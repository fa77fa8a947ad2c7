"""What one gateway process holds while it runs, and the actions routes take with it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uuid6
from fastapi import HTTPException, Request
from faststream.kafka import KafkaBroker
from faststream.kafka.publisher import DefaultPublisher
from mnistream_common import tracing
from mnistream_common.events import (
    DigitLabeled,
    DigitPredicted,
    DigitSubmitted,
    LedgerEntry,
    ModelPromoted,
)
from mnistream_common.history_client import (
    HistoryClient,
    HistoryRefusedError,
    HistoryUnavailableError,
)
from mnistream_common.ledger import LedgerState, rollout_json
from mnistream_common.logs import get_logger

from gateway.hub import EventHub, ServerEvent
from gateway.metrics import GatewayMetrics
from gateway.progress import RescoreProgress
from gateway.ratelimit import SharedRateLimiter
from gateway.settings import Settings
from gateway.upload_log import UploadLog

log = get_logger(__name__)
PUBLISH_TIMEOUT_S = 10.0


@dataclass
class Champion:
    """The model the ledger says is serving, and the rollout running beside it."""

    ledger: LedgerState = field(default_factory=LedgerState)
    ledger_end_at_start: int = 0

    @property
    def event(self) -> ModelPromoted | None:
        """The champion's promotion."""
        return self.ledger.champion


def _over_limit(limiter: SharedRateLimiter, request: Request, what: str) -> HTTPException | None:
    client = request.client.host if request.client else "unknown"
    verdict = limiter.hit(client)
    if verdict.allowed:
        return None
    return HTTPException(
        429,
        f"too many {what} from {client}: the limit is {limiter.limit} per minute; "
        f"retry in {verdict.retry_after_s} s",
        headers={"Retry-After": str(verdict.retry_after_s)},
    )


@dataclass
class GatewayState:
    """Broker, publishers, the event hub and the history client of one gateway process."""

    settings: Settings
    broker: KafkaBroker
    submitted: DefaultPublisher
    labeled: DefaultPublisher
    hub: EventHub
    history: HistoryClient
    progress: RescoreProgress
    metrics: GatewayMetrics
    kafka_ready: Callable[[], Awaitable[bool]]
    champion: Champion = field(default_factory=Champion)
    upload_log: UploadLog = field(default_factory=UploadLog)
    limiter: SharedRateLimiter | None = None
    label_limiter: SharedRateLimiter | None = None

    @staticmethod
    def new_digit_id() -> uuid.UUID:
        """A time-ordered id (UUIDv7), so ids sort by submission time."""
        return uuid.UUID(bytes=uuid6.uuid7().bytes)

    def rate_limit(self, request: Request) -> None:
        """Refuse with 429 and Retry-After when a client sends more than its share of uploads."""
        if self.limiter is not None and (refusal := _over_limit(self.limiter, request, "uploads")):
            self.metrics.uploads.labels(outcome="rejected_429").inc()
            raise refusal

    def label_rate_limit(self, request: Request) -> None:
        """The same for labels, with a limit of their own."""
        if self.label_limiter is not None and (
            refusal := _over_limit(self.label_limiter, request, "labels")
        ):
            self.metrics.labels.labels(outcome="rejected_429").inc()
            raise refusal

    async def publish_submitted(self, event: DigitSubmitted) -> None:
        """Hand the drawing to Kafka and wait for acks=all; 503 when Kafka does not answer."""
        await self._publish(self.submitted, event.to_bytes(), event.digit_id)

    async def publish_labeled(self, event: DigitLabeled) -> None:
        """Hand a label to Kafka and wait for acks=all."""
        await self._publish(self.labeled, event.to_bytes(), event.digit_id)

    async def _publish(self, publisher: DefaultPublisher, body: bytes, key: uuid.UUID) -> None:
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await publisher.publish(body, key=str(key).encode(), headers=tracing.headers())
        except Exception as exc:  # Kafka errors and timeouts: nothing was accepted
            log.error("publish failed", digit_id=str(key), error=repr(exc))
            self.metrics.uploads.labels(outcome="kafka_unavailable").inc()
            raise HTTPException(
                503, "Kafka is unavailable, so nothing was accepted; try again shortly"
            ) from exc

    async def drawing_exists(self, digit_id: uuid.UUID) -> bool:
        """Whether history-service has the drawing (503 if it cannot say)."""
        try:
            return await self.history.drawing_exists(digit_id)
        except (HistoryUnavailableError, HistoryRefusedError) as exc:
            raise HTTPException(503, "the history service is unreachable; try again") from exc

    def on_prediction(self, event: DigitPredicted) -> None:
        """Route a prediction from Kafka: live ones to waiters and SSE, jobs to progress."""
        self.metrics.predictions_seen.labels(
            model_version=str(event.model.version), kind=event.kind
        ).inc()
        if event.kind != "live":
            if event.job_id is not None:
                self.progress.seen(event.job_id)
            return
        data = prediction_json(event)
        if event.submitted_at is not None:
            self.metrics.latency_ms.observe(data["latency_ms"])
        self.hub.prediction(event.digit_id, data)

    def on_ledger(self, entry: LedgerEntry, offset: int) -> None:
        """Track the champion and the rollout; tell browsers about the promotions and rollout
        steps that happen while we run."""
        ignored = self.champion.ledger.apply(entry, offset)
        if ignored is not None or offset < self.champion.ledger_end_at_start:
            return
        if isinstance(entry, ModelPromoted):
            self.hub.broadcast(ServerEvent("promotion", entry.model_dump(mode="json")))
        else:
            self.hub.broadcast(ServerEvent("rollout", entry.model_dump(mode="json")))

    def hello(self) -> str:
        """The first SSE message: who is serving now, and the rollout running beside it."""
        event = self.champion.event
        rollout = self.champion.ledger.rollout
        return json.dumps(
            {
                "champion": None if event is None else event.model_dump(mode="json"),
                "rollout": None if rollout is None else rollout_json(rollout),
            }
        )

    async def readiness(self) -> dict[str, Any]:
        """Kafka reachable and a champion promoted."""
        kafka = await self.kafka_ready()
        event = self.champion.event
        model = (
            None
            if event is None
            else {"version": event.model.version, "sha256": event.model.sha256}
        )
        report: dict[str, Any] = {"ready": bool(kafka and model), "kafka": kafka, "model": model}
        if not kafka:
            report["reason"] = "Kafka is unreachable"
        elif model is None:
            report["reason"] = "no model has been promoted yet: run `mnistream promote VERSION`"
        return report


def prediction_json(event: DigitPredicted) -> dict[str, Any]:
    """A prediction as the browser and `?wait=` callers see it."""
    data = event.model_dump(mode="json", exclude={"event_id", "schema_version", "occurred_at"})
    data["predicted_at"] = event.occurred_at.isoformat()
    if event.submitted_at is not None:
        latency = (time.time() - event.submitted_at.timestamp()) * 1000
        data["latency_ms"] = round(max(0.0, latency), 2)
    return data
