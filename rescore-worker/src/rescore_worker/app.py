"""Composition root of the rescore worker: planner, chunk consumer, ledger tracker, probes."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
from faststream import AckPolicy
from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from mnistream_common.events import InvalidEventError, ModelPromoted, RescoreTask
from mnistream_common.kafka import end_offsets, make_broker, record_of, send_to_dead_letter
from mnistream_common.logs import configure_logging, get_logger
from mnistream_common.metrics import lag_gauge, report_lag
from mnistream_common.storage import ObjectStore, make_minio
from mnistream_common.topics import (
    DIGITS_DEADLETTER,
    DIGITS_PREDICTED,
    MODEL_PROMOTED,
    RESCORE_TASKS,
    Groups,
)
from mnistream_serving.loader import ModelCache
from mnistream_serving.model import ModelRejectedError, RuntimeOptions
from prometheus_client import CollectorRegistry, Counter, Gauge, make_asgi_app

from rescore_worker.handlers import ChunkScorer, Planner
from rescore_worker.ledger import Ledger
from rescore_worker.settings import Settings

log = get_logger(__name__)
SERVICE = "rescore-worker"


def create_app(settings: Settings | None = None) -> AsgiFastStream:
    """Build the worker; connections are made when it starts."""
    settings = settings or Settings()
    configure_logging(SERVICE, level=settings.log_level, json=settings.log_json)
    broker = make_broker(settings, client_id=settings.worker_id, log_level=logging.DEBUG)
    registry = CollectorRegistry()
    rescored = Counter(
        "mnistream_rescored", "Drawings rescored.", ["model_version", "kind"], registry=registry
    )
    history = httpx.AsyncClient(base_url=settings.history_url, timeout=30.0)
    ledger = Ledger()
    store = ObjectStore(make_minio(settings, max_connections=settings.rescore_fetch_concurrency))
    options = RuntimeOptions(
        settings.onnx_threads, settings.prefer_gpu, settings.rescore_chunk_size
    )

    async def ledger_end() -> int:
        return (await end_offsets(settings.kafka_bootstrap_servers, MODEL_PROMOTED)).get(0, 0)

    planner = Planner(
        history, broker.publisher(RESCORE_TASKS.name), ledger_end, settings.rescore_chunk_size
    )
    scorer = ChunkScorer(
        ModelCache(store, options),
        store,
        settings.drawings_bucket,
        broker.publisher(DIGITS_PREDICTED.name),
        ledger,
        settings.worker_id,
        settings.rescore_fetch_concurrency,
    )
    tasks = _subscribe(broker, ledger, planner, scorer, rescored)
    return AsgiFastStream(
        broker,
        logger=logging.getLogger("mnistream.app"),
        lifespan=_lifespan(history, tasks, lag_gauge(registry)),
        asgi_routes=[
            ("/healthz", _probe(broker, ready_check=False)),
            ("/readyz", _probe(broker, ready_check=True)),
            ("/metrics", make_asgi_app(registry)),
        ],
    )


def _subscribe(
    broker: KafkaBroker, ledger: Ledger, planner: Planner, scorer: ChunkScorer, rescored: Counter
) -> Any:
    deadletter = broker.publisher(DIGITS_DEADLETTER.name)

    async def to_dead_letter(record: Any, error: str) -> None:
        await send_to_dead_letter(deadletter, record, error, SERVICE)

    # Every instance reads the whole ledger (no group) to know which promotion is the newest.
    @broker.subscriber(MODEL_PROMOTED.name, auto_offset_reset="earliest")
    async def track(msg: KafkaMessage) -> None:
        record = record_of(msg)
        try:
            ledger.record(ModelPromoted.from_bytes(record.value or b""), record.offset)
        except InvalidEventError:
            return  # history-service dead-letters invalid ledger records

    # One planner per promotion: the group has one consumer of the single ledger partition.
    @broker.subscriber(
        MODEL_PROMOTED.name,
        group_id=Groups.RESCORE_PLANNER,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )
    async def plan(msg: KafkaMessage) -> None:
        record = record_of(msg)
        try:
            event = ModelPromoted.from_bytes(record.value or b"")
        except InvalidEventError:
            return
        await planner(event, record.offset)

    tasks = broker.subscriber(
        RESCORE_TASKS.name,
        group_id=Groups.RESCORE,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        max_poll_interval_ms=600_000,
    )

    @tasks
    async def rescore(msg: KafkaMessage) -> None:
        record = record_of(msg)
        try:
            task = RescoreTask.from_bytes(record.value or b"")
        except InvalidEventError as exc:
            await to_dead_letter(record, str(exc))
            return
        try:
            count = await scorer(task)
        except ModelRejectedError as exc:
            # Redelivering would fail the same way forever and block the partition.
            await to_dead_letter(record, f"model v{task.model.version} rejected: {exc}")
            return
        rescored.labels(model_version=str(task.model.version), kind=task.kind).inc(count)

    return tasks


def _lifespan(
    history: httpx.AsyncClient, tasks: Any, lag: Gauge
) -> Callable[[], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        reporter = asyncio.create_task(report_lag([(Groups.RESCORE, tasks)], lag))
        try:
            yield
        finally:
            reporter.cancel()
            await history.aclose()

    return lifespan


def _probe(broker: KafkaBroker, *, ready_check: bool) -> Any:
    @get
    async def probe(scope: Any) -> AsgiResponse:
        ok = await broker.ping(timeout=2.0) if ready_check else True
        body = json.dumps({"ready" if ready_check else "status": ok if ready_check else "ok"})
        return AsgiResponse(body.encode(), 200 if ok else 503, {"content-type": "application/json"})

    return probe
