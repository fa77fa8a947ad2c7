"""Composition root of the history service: consumers and read API in one process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import cast

from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from mnistream_common.kafka import make_broker
from mnistream_common.logs import configure_logging, get_logger
from mnistream_common.metrics import report_lag
from mnistream_common.storage import ObjectStore, make_minio
from mnistream_common.topics import Groups
from prometheus_client import make_asgi_app
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from tenacity import AsyncRetrying, stop_after_delay, wait_exponential

from history_service.api import ReadContext, router
from history_service.consumers import Health, subscribe_all
from history_service.metrics import HistoryMetrics
from history_service.migrate import upgrade_async
from history_service.settings import Settings
from history_service.writer import HistoryWriter

log = get_logger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service; connections are made in the lifespan."""
    settings = settings or Settings()
    configure_logging("history-service", level=settings.log_level, json=settings.log_json)
    metrics = HistoryMetrics()
    app = FastAPI(
        title="mnistream history-service",
        version="0.1.0",
        description="Every drawing and prediction, stored and served.",
        lifespan=_lifespan(settings, metrics),
    )
    app.include_router(router)
    app.mount("/metrics", make_asgi_app(metrics.registry))
    return app


def _lifespan(
    settings: Settings, metrics: HistoryMetrics
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            await _migrate(settings.database_url)
        engine = create_async_engine(settings.database_url, pool_size=10, pool_pre_ping=True)
        store = ObjectStore(make_minio(settings))
        health = Health()
        writer = HistoryWriter(engine, store, settings.drawings_bucket)
        broker = make_broker(settings, client_id="history-service", log_level=logging.DEBUG)
        subscribers = subscribe_all(
            broker,
            writer,
            health,
            settings.history_batch_size,
            settings.history_retry_max_seconds,
            metrics,
        )
        app.state.history = ReadContext(engine, store, health, settings.drawings_bucket)
        await broker.start()
        lag = asyncio.create_task(
            report_lag([(Groups.HISTORY, s) for s in subscribers], metrics.lag)
        )
        log.info("history-service consuming", group="history", port=settings.history_port)
        try:
            yield
        finally:
            lag.cancel()
            await broker.stop()
            await engine.dispose()

    return lifespan


def describe_broker() -> KafkaBroker:
    """history-service's Kafka endpoints for the AsyncAPI document (nothing connects)."""
    settings = Settings()
    broker = make_broker(settings, client_id="history-service")
    writer = HistoryWriter(
        cast(AsyncEngine, None), cast(ObjectStore, None), settings.drawings_bucket
    )
    subscribe_all(broker, writer, Health(), settings.history_batch_size, 1.0)
    return broker


async def _migrate(database_url: str) -> None:
    async for attempt in AsyncRetrying(
        wait=wait_exponential(multiplier=0.5, max=5), stop=stop_after_delay(60), reraise=True
    ):
        with attempt:
            await upgrade_async(database_url)
