"""Composition root of the gateway: FastAPI app, Kafka broker and subscribers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import cast

import httpx
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from mnistream_common.events import DigitPredicted, InvalidEventError, ModelPromoted
from mnistream_common.kafka import end_offsets, make_broker, record_of
from mnistream_common.logs import configure_logging, get_logger
from mnistream_common.topics import (
    DIGITS_LABELED,
    DIGITS_PREDICTED,
    DIGITS_SUBMITTED,
    MODEL_PROMOTED,
)
from prometheus_client import make_asgi_app

from gateway.handlers import router, validation_problem
from gateway.hub import EventHub
from gateway.metrics import GatewayMetrics
from gateway.progress import RescoreProgress
from gateway.settings import Settings
from gateway.state import GatewayState

log = get_logger(__name__)


@dataclass(frozen=True)
class Edges:
    """What the gateway talks to. Left empty, the lifespan connects to the real ones; component
    tests pass an in-memory broker (FastStream's TestKafkaBroker), a ledger end that needs no
    Kafka, and a transport that fakes history-service."""

    broker: KafkaBroker | None = None
    ledger_end: Callable[[], Awaitable[int]] | None = None
    history_transport: httpx.AsyncBaseTransport | None = None


def create_app(settings: Settings | None = None, edges: Edges | None = None) -> FastAPI:
    """Build the gateway; connections are made in the lifespan, not here."""
    settings = settings or Settings()
    configure_logging("gateway", level=settings.log_level, json=settings.log_json)
    metrics = GatewayMetrics()
    app = FastAPI(
        title="mnistream gateway",
        version="0.1.0",
        description="Upload drawings, stream predictions back, read the history.",
        lifespan=_lifespan(settings, metrics, edges or Edges()),
    )
    app.include_router(router)
    # Every error is a `Problem` with a readable `detail`, request validation included.
    app.add_exception_handler(RequestValidationError, validation_problem)
    app.mount("/metrics", make_asgi_app(metrics.registry))
    if settings.web_dir.is_dir():
        app.mount("/", StaticFiles(directory=settings.web_dir, html=True), name="web")
    else:
        log.warning(
            "web client folder not found; serving the API only", web_dir=str(settings.web_dir)
        )
    return app


def _lifespan(settings: Settings, metrics: GatewayMetrics, edges: Edges):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        broker = edges.broker or make_broker(settings, client_id="gateway", log_level=logging.DEBUG)
        hub = EventHub(settings.sse_queue_size)
        history = httpx.AsyncClient(
            base_url=settings.history_url, timeout=10.0, transport=edges.history_transport
        )
        state = GatewayState(
            settings=settings,
            broker=broker,
            submitted=broker.publisher(DIGITS_SUBMITTED.name),
            labeled=broker.publisher(DIGITS_LABELED.name),
            hub=hub,
            history=history,
            progress=RescoreProgress(hub, history),
            metrics=metrics,
        )
        ledger_end = edges.ledger_end or partial(_ledger_end, settings)
        state.champion.ledger_end_at_start = await ledger_end()
        _subscribe(broker, state)
        app.state.gateway = state
        await broker.start()
        log.info("gateway ready", port=settings.gateway_port, history=settings.history_url)
        try:
            yield
        finally:
            await state.progress.close()
            await broker.stop()
            await history.aclose()

    return lifespan


async def _ledger_end(settings: Settings) -> int:
    """Where `model.promoted` ends now: promotions after it are news for the browsers."""
    return (await end_offsets(settings.kafka_bootstrap_servers, MODEL_PROMOTED)).get(0, 0)


def describe_broker() -> KafkaBroker:
    """The gateway's Kafka endpoints for the AsyncAPI document (nothing connects)."""
    broker = make_broker(Settings(), client_id="gateway")
    broker.publisher(DIGITS_SUBMITTED.name)
    broker.publisher(DIGITS_LABELED.name)
    _subscribe(broker, cast(GatewayState, None))  # handlers use the state only when called
    return broker


def _subscribe(broker: KafkaBroker, state: GatewayState) -> None:
    # No group: every gateway instance sees every prediction, so any can answer any waiter.
    @broker.subscriber(DIGITS_PREDICTED.name, auto_offset_reset="latest")
    async def on_predicted(msg: KafkaMessage) -> None:
        record = record_of(msg)
        try:
            event = DigitPredicted.from_bytes(record.value or b"")
        except InvalidEventError as exc:
            log.warning("ignoring an invalid prediction", offset=record.offset, error=str(exc))
            return
        state.on_prediction(event)

    @broker.subscriber(MODEL_PROMOTED.name, auto_offset_reset="earliest")
    async def on_promoted(msg: KafkaMessage) -> None:
        record = record_of(msg)
        try:
            event = ModelPromoted.from_bytes(record.value or b"")
        except InvalidEventError as exc:
            log.warning("ignoring an invalid promotion", offset=record.offset, error=str(exc))
            return
        state.on_promotion(event, record.offset)
