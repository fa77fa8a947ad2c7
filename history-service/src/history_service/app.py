"""Composition root of the history service: consumers and read API in one process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from aiokafka.errors import CommitFailedError
from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from mnistream_common.kafka import make_broker, rewind_group
from mnistream_common.logs import configure_logging, get_logger
from mnistream_common.metrics import report_lag
from mnistream_common.storage import ObjectStore, make_minio
from mnistream_common.topics import HISTORY_TOPICS, Groups
from prometheus_client import make_asgi_app
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from history_service.admin import ReplayRefusedError, admin_router
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
    app.include_router(admin_router)
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
        consumers = Consumers(settings, writer, health, metrics)
        app.state.history = ReadContext(engine, store, health, settings.drawings_bucket)
        app.state.replayer = consumers
        app.state.admin_token = settings.admin_token.get_secret_value()
        await consumers.start()
        log.info("history-service consuming", group="history", port=settings.history_port)
        try:
            yield
        finally:
            await consumers.stop()
            await engine.dispose()

    return lifespan


@dataclass
class Consumers:
    """The `history` group's consumers in this process: started, stopped, and replayed."""

    settings: Settings
    writer: HistoryWriter
    health: Health
    metrics: HistoryMetrics
    broker: KafkaBroker | None = None
    lag: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def start(self) -> None:
        """Subscribe to the four topics and consume from the group's committed offsets."""
        broker = make_broker(self.settings, client_id="history-service", log_level=logging.DEBUG)
        subscribers = subscribe_all(
            broker,
            self.writer,
            self.health,
            self.settings.history_batch_size,
            self.settings.history_retry_max_seconds,
            self.metrics,
        )
        await broker.start()
        self.broker = broker
        self.lag = asyncio.create_task(
            report_lag([(Groups.HISTORY, s) for s in subscribers], self.metrics.lag)
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
                await self.start()
        log.info("history replay", since=str(since) if since else "beginning", records=records)
        return records

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
                    return await rewind_group(
                        self.settings.kafka_bootstrap_servers, Groups.HISTORY, HISTORY_TOPICS, since
                    )
        except CommitFailedError as exc:
            raise ReplayRefusedError(
                "the `history` consumer group still has members: another history-service "
                "instance is consuming; stop the others, then replay"
            ) from exc
        raise AssertionError("unreachable: tenacity reraises")


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
