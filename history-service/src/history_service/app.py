"""Composition root of the history service: consumers and read API in one process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from mnistream_common.body_limit import JSON_BODY_LIMIT, BodyLimit
from mnistream_common.history_api import MODEL_INPUTS_BODY_LIMIT
from mnistream_common.logs import configure_logging, get_logger
from mnistream_common.metrics import metrics_routes
from mnistream_common.storage import ObjectStore, make_minio
from mnistream_common.tracing import shutdown_tracing, trace_service
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from tenacity import AsyncRetrying, stop_after_delay, wait_exponential

from history_service.admin import admin_router
from history_service.api import ReadContext, router
from history_service.consumers import SERVICE, Consumers, Health
from history_service.drift import DriftMonitor, Thresholds
from history_service.erase import Eraser
from history_service.guardrails import Guardrails, Rules
from history_service.inputs import InputSource
from history_service.metrics import HistoryMetrics
from history_service.migrate import upgrade_async
from history_service.rollouts import Evidence
from history_service.settings import Settings
from history_service.writer import HistoryWriter

log = get_logger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service; connections are made in the lifespan."""
    settings = settings or Settings()
    configure_logging(SERVICE, level=settings.log_level, json=settings.log_json)
    metrics = HistoryMetrics()
    app = FastAPI(
        title="mnistream history-service",
        version="0.1.0",
        description="Every drawing and prediction, stored and served.",
        lifespan=_lifespan(settings, metrics),
    )
    app.include_router(router)
    app.include_router(admin_router)
    app.router.routes.extend(metrics_routes(metrics.registry))
    # The admin routes' token is checked after their body is parsed: the body is capped first.
    app.add_middleware(
        BodyLimit,
        default=JSON_BODY_LIMIT,
        limits={"/internal/model-inputs": MODEL_INPUTS_BODY_LIMIT},
    )
    return app


def _lifespan(
    settings: Settings, metrics: HistoryMetrics
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        trace_service(SERVICE, settings)
        if settings.migrate_on_start:
            await _migrate(settings.database_url)
        engine = create_async_engine(settings.database_url, pool_size=10, pool_pre_ping=True)
        consumers = _consumers(settings, engine, metrics)
        store = consumers.writer.store
        app.state.history = ReadContext(
            engine,
            store,
            consumers.health,
            settings.drawings_bucket,
            InputSource(engine, store, consumers.writer),
            Evidence(settings.rollout_min_labels),
        )
        app.state.replayer = consumers
        app.state.eraser = Eraser(settings, engine)
        app.state.admin_token = settings.admin_token.get_secret_value()
        await consumers.start()
        log.info("history-service consuming", group="history", port=settings.history_port)
        guard = None
        if settings.rollout_guardrails:
            rules = Rules(
                min_labels=settings.rollout_min_labels,
                max_p99_ms=settings.rollout_max_p99_ms,
                max_failure_rate=settings.rollout_max_failure_rate,
            )
            guardrails = Guardrails(
                engine,
                settings,
                rules,
                metrics,
                settings.rollout_guard_interval_s,
            )
            guard = asyncio.create_task(guardrails.run())
        app.state.drift = DriftMonitor(
            engine,
            metrics,
            settings.drift_window,
            Thresholds(settings.drift_psi_threshold, settings.drift_gap_threshold),
            settings.drift_interval_s,
        )
        monitor = None
        if settings.drift_interval_s > 0:
            monitor = asyncio.create_task(app.state.drift.run())
        try:
            yield
        finally:
            for task in (guard, monitor):
                if task is not None:
                    task.cancel()
            await consumers.stop()
            await engine.dispose()
            shutdown_tracing()

    return lifespan


def describe_broker() -> KafkaBroker:
    """history-service's Kafka endpoints for the AsyncAPI document (nothing connects)."""
    settings = Settings()
    return _consumers(
        settings, create_async_engine(settings.database_url), HistoryMetrics()
    ).build()


def _consumers(settings: Settings, engine: AsyncEngine, metrics: HistoryMetrics) -> Consumers:
    writer = HistoryWriter(engine, ObjectStore(make_minio(settings)), settings.drawings_bucket)
    return Consumers(settings, writer, Health(), metrics)


async def _migrate(database_url: str) -> None:
    async for attempt in AsyncRetrying(
        wait=wait_exponential(multiplier=0.5, max=5), stop=stop_after_delay(60), reraise=True
    ):
        with attempt:
            await upgrade_async(database_url)
