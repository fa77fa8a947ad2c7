"""Composition root of the gateway: FastAPI app, Kafka broker and subscribers."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from faststream.kafka import KafkaBroker
from mnistream_common.body_limit import JSON_BODY_LIMIT, BodyLimit
from mnistream_common.consume import Delivery, LogRejects, Rejected, typed_batch
from mnistream_common.events import DigitPredicted, LedgerEntry, LedgerRecords
from mnistream_common.history_client import HistoryClient
from mnistream_common.kafka import LONG_POLL_MS, KafkaProbe, end_offsets, make_broker
from mnistream_common.logs import configure_logging, get_logger
from mnistream_common.metrics import metrics_routes
from mnistream_common.topics import (
    DIGITS_LABELED,
    DIGITS_PREDICTED,
    DIGITS_SUBMITTED,
    MODEL_PROMOTED,
)
from mnistream_common.tracing import shutdown_tracing, trace_service
from prometheus_client import CollectorRegistry, multiprocess

from gateway.handlers import router, validation_problem
from gateway.hub import EventHub
from gateway.metrics import GatewayMetrics
from gateway.progress import RescoreProgress
from gateway.ratelimit import SharedRateLimiter
from gateway.settings import Settings
from gateway.state import GatewayState

log = get_logger(__name__)
SERVICE = "gateway"


@dataclass(frozen=True)
class Overrides:
    """What the gateway talks to. Left empty, the lifespan connects to the real ones; component
    tests pass an in-memory broker (FastStream's TestKafkaBroker), a ledger end and a readiness
    check that need no Kafka, and a transport that fakes history-service."""

    broker: KafkaBroker | None = None
    ledger_end: Callable[[], Awaitable[int]] | None = None
    kafka_ready: Callable[[], Awaitable[bool]] | None = None
    history_transport: httpx.AsyncBaseTransport | None = None


def create_app(settings: Settings | None = None, overrides: Overrides | None = None) -> FastAPI:
    """Build the gateway; connections are made in the lifespan, not here."""
    settings = settings or Settings()
    configure_logging(SERVICE, level=settings.log_level, json=settings.log_json)
    metrics = GatewayMetrics()
    app = FastAPI(
        title="mnistream gateway",
        version="0.1.0",
        description="Upload drawings, stream predictions back, read the history.",
        lifespan=_lifespan(settings, metrics, overrides or Overrides()),
    )
    app.include_router(router)
    # Uploads keep their own limit (the route reads the stream itself, refusing as soon as
    # MAX_UPLOAD_BYTES pass); every other route's body is a few bytes of JSON.
    app.add_middleware(BodyLimit, default=JSON_BODY_LIMIT, limits={"/api/predictions": None})
    # Every error is a `Problem` with a readable `detail`, request validation included.
    app.add_exception_handler(RequestValidationError, validation_problem)
    app.router.routes.extend(metrics_routes(exposed_registry(metrics)))
    if settings.web_dir.is_dir():
        app.mount("/", StaticFiles(directory=settings.web_dir, html=True), name="web")
    else:
        log.warning(
            "web client folder not found; serving the API only", web_dir=str(settings.web_dir)
        )
    return app


def _lifespan(
    settings: Settings, metrics: GatewayMetrics, overrides: Overrides
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        trace_service(SERVICE, settings)
        state = build_state(settings, metrics, overrides)
        ledger_end = overrides.ledger_end or partial(_ledger_end, settings)
        state.champion.ledger_end_at_start = await ledger_end()
        subscribe(state)
        app.state.gateway = state
        await state.broker.start()
        upload_log = asyncio.create_task(state.upload_log.run())
        log.info("gateway ready", port=settings.gateway_port, history=settings.history_url)
        try:
            yield
        finally:
            upload_log.cancel()
            await state.progress.close()
            await state.broker.stop()
            await state.history.close()
            shutdown_tracing()

    return lifespan


def exposed_registry(metrics: GatewayMetrics) -> CollectorRegistry:
    """This process's metrics, or, with several gateway processes, every process's summed."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return metrics.registry
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


def build_state(settings: Settings, metrics: GatewayMetrics, overrides: Overrides) -> GatewayState:
    """The broker, publishers, event hub and history client of one gateway process (nothing
    connects until the broker starts or a request is made)."""
    broker = overrides.broker or make_broker(settings, client_id=SERVICE, log_level=logging.DEBUG)
    hub = EventHub(settings.sse_queue_size)
    history = HistoryClient.at(
        settings.history_url, timeout=10.0, transport=overrides.history_transport
    )
    run_dir = settings.gateway_run_dir or Path(tempfile.mkdtemp(prefix="mnistream-gateway-"))
    limit, label_limit = settings.rate_limit_per_minute, settings.label_rate_limit_per_minute
    kafka_ready = overrides.kafka_ready or KafkaProbe(settings).reachable
    return GatewayState(
        kafka_ready=kafka_ready,
        limiter=SharedRateLimiter(run_dir / "rate-limit", limit) if limit > 0 else None,
        label_limiter=(
            SharedRateLimiter(run_dir / "label-rate-limit", label_limit)
            if label_limit > 0
            else None
        ),
        settings=settings,
        broker=broker,
        submitted=broker.publisher(DIGITS_SUBMITTED.name),
        labeled=broker.publisher(DIGITS_LABELED.name),
        hub=hub,
        history=history,
        progress=RescoreProgress(hub, history),
        metrics=metrics,
    )


async def _ledger_end(settings: Settings) -> int:
    """Where `model.promoted` ends now: promotions after it are news for the browsers."""
    return (await end_offsets(settings, MODEL_PROMOTED)).get(0, 0)


def describe_broker() -> KafkaBroker:
    """The gateway's Kafka endpoints for the AsyncAPI document (nothing connects)."""
    state = build_state(Settings(), GatewayMetrics(), Overrides())
    subscribe(state)
    return state.broker


# Every gateway instance reads these; an invalid record is someone else's to dead-letter.
SKIP_INVALID = LogRejects(
    "the gateway only reads this topic; the record's consumers dead-letter it"
)


def subscribe(state: GatewayState) -> None:
    """Register the gateway's readers of predictions and of the ledger on its broker."""

    # No group: every gateway instance sees every prediction, so any can answer any waiter.
    @state.broker.subscriber(
        DIGITS_PREDICTED.name, auto_offset_reset="latest", fetch_max_wait_ms=LONG_POLL_MS
    )
    @typed_batch(DigitPredicted, SKIP_INVALID)
    async def on_predicted(deliveries: list[Delivery[DigitPredicted]]) -> list[Rejected]:
        for delivery in deliveries:
            state.on_prediction(delivery.event)
        return []

    @state.broker.subscriber(
        MODEL_PROMOTED.name, auto_offset_reset="earliest", fetch_max_wait_ms=LONG_POLL_MS
    )
    @typed_batch(LedgerRecords, SKIP_INVALID)
    async def on_promoted(deliveries: list[Delivery[LedgerEntry]]) -> list[Rejected]:
        for delivery in deliveries:
            state.on_ledger(delivery.event, delivery.record.offset)
        return []
