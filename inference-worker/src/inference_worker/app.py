"""Composition root of the inference worker: broker, model keeper, subscribers, HTTP probes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from faststream import AckPolicy
from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.kafka import KafkaBroker
from mnistream_common.consume import (
    DeadLetterRejects,
    Delivery,
    LogRejects,
    Rejected,
    typed_batch,
    wake_on_records,
)
from mnistream_common.events import (
    DigitSubmitted,
    LedgerEntry,
    LedgerRecords,
    ModelPromoted,
    ModelRef,
)
from mnistream_common.kafka import LONG_POLL_MS, end_offsets, make_broker
from mnistream_common.logs import configure_logging, get_logger
from mnistream_common.metrics import report_lag
from mnistream_common.storage import ObjectStore, make_minio
from mnistream_common.topics import (
    DIGITS_DEADLETTER,
    DIGITS_PREDICTED,
    DIGITS_SUBMITTED,
    MODEL_PROMOTED,
    Groups,
)
from mnistream_common.tracing import shutdown_tracing, trace_service
from mnistream_serving.loader import fetch_and_build
from mnistream_serving.model import LoadedModel, RuntimeOptions
from mnistream_serving.registry import RegistryCheck
from prometheus_client import make_asgi_app

from inference_worker.handlers import SERVICE, BatchHandler
from inference_worker.keeper import Loader, ModelKeeper, Release
from inference_worker.metrics import WorkerMetrics
from inference_worker.settings import Settings

log = get_logger(__name__)


@dataclass(frozen=True)
class Overrides:
    """What the worker talks to, replaced in component tests. Left empty, the lifespan connects
    to the real ones: models come from object storage, the ledger's end from Kafka."""

    load_model: Loader | None = None
    ledger_end: Callable[[], Awaitable[int]] | None = None


@dataclass
class Worker:
    """Everything one worker process holds."""

    settings: Settings
    broker: KafkaBroker
    keeper: ModelKeeper
    handler: BatchHandler
    rejects: DeadLetterRejects
    metrics: WorkerMetrics
    consuming: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    subscribers: list[tuple[str, Any]] = field(default_factory=list)


def create_app(
    settings: Settings | None = None, overrides: Overrides | None = None
) -> AsgiFastStream:
    """Build the worker; nothing connects until the app starts."""
    settings = settings or Settings()
    configure_logging(SERVICE, level=settings.log_level, json=settings.log_json)
    worker = build_worker(settings, overrides)
    return AsgiFastStream(
        worker.broker,
        logger=logging.getLogger("mnistream.app"),
        lifespan=_lifespan(worker, overrides or Overrides()),
        asgi_routes=[
            ("/healthz", _healthz()),
            ("/readyz", _readyz(worker)),
            ("/metrics", make_asgi_app(worker.metrics.registry)),
        ],
    )


def build_worker(settings: Settings, overrides: Overrides | None = None) -> Worker:
    """The broker, model keeper and batch handler of one worker, wired together."""
    overrides = overrides or Overrides()
    broker = make_broker(settings, client_id=settings.worker_id, log_level=logging.DEBUG)
    metrics = WorkerMetrics()

    async def on_swap(model: LoadedModel, previous: LoadedModel | None) -> None:
        metrics.swaps.inc()
        metrics.model_version.set(model.ref.version)

    async def on_ready() -> None:
        if not worker.consuming:
            worker.consuming = True
            await _start_consuming(worker)

    worker = Worker(
        settings,
        broker,
        ModelKeeper(overrides.load_model or _store_loader(settings), on_swap, on_ready=on_ready),
        BatchHandler(settings.worker_id, broker.publisher(DIGITS_PREDICTED.name), metrics),
        DeadLetterRejects(broker.publisher(DIGITS_DEADLETTER.name), SERVICE, metrics.dead_letters),
        metrics,
    )
    metrics.fallback.set_function(lambda: 1.0 if worker.keeper.fallback else 0.0)
    metrics.rollout_share.set_function(lambda: _share(worker.keeper.release))
    metrics.candidate_version.set_function(
        lambda: float(worker.keeper.release.candidate.ref.version) if worker.keeper.release else 0
    )
    _subscribe_to_promotions(worker)
    return worker


def _share(release: Release | None) -> float:
    if release is None or release.rollout.shadow:
        return 0.0
    return release.rollout.percent


def _store_loader(settings: Settings) -> Loader:
    """Models from object storage, each checked with the registry first; the client is made on
    the first load, not at build time."""
    options = RuntimeOptions(settings.onnx_threads, settings.prefer_gpu, settings.max_batch_size)
    stores: list[ObjectStore] = []
    registry = RegistryCheck(settings.mlflow_tracking_uri)

    async def load(model: ModelRef, onnx_uri: str) -> LoadedModel:
        if not stores:
            stores.append(ObjectStore(make_minio(settings)))
        return await fetch_and_build(
            stores[0], model, onnx_uri, options, settings.artifacts_bucket, registry
        )

    return load


def _subscribe_to_promotions(worker: Worker) -> None:
    # No group: every worker instance reads the whole ledger and sees every promotion.
    subscriber = worker.broker.subscriber(
        MODEL_PROMOTED.name, auto_offset_reset="earliest", fetch_max_wait_ms=LONG_POLL_MS
    )
    # history-service dead-letters ledger records once; N workers would duplicate it.
    skip = LogRejects("an invalid promotion; history-service dead-letters it")

    async def skip_invalid(rejected: Sequence[Rejected]) -> None:
        await skip(rejected)
        for item in rejected:
            worker.keeper.skipped(item.record.offset)

    @subscriber
    @typed_batch(LedgerRecords, skip_invalid)
    async def on_promoted(deliveries: list[Delivery[LedgerEntry]]) -> list[Rejected]:
        for delivery in deliveries:
            if isinstance(delivery.event, ModelPromoted):
                worker.keeper.promoted(delivery.event, delivery.record.offset)
            else:
                worker.keeper.rollout_step(delivery.event, delivery.record.offset)
        return []


async def _start_consuming(worker: Worker) -> None:
    subscriber = _submitted_subscriber(worker)
    await subscriber.start()
    worker.subscribers.append((Groups.INFERENCE, subscriber))
    log.info(
        "consuming digits.submitted",
        group=Groups.INFERENCE,
        max_batch=worker.settings.max_batch_size,
    )


def _submitted_subscriber(worker: Worker) -> Any:
    settings = worker.settings
    subscriber = wake_on_records(
        worker.broker.subscriber(
            DIGITS_SUBMITTED.name,
            group_id=Groups.INFERENCE,
            batch=True,
            max_records=settings.max_batch_size,
            batch_timeout_ms=settings.max_batch_delay_ms,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            # One uploads-sized fetch per partition: 12 partitions of 4 MB of PNGs bloated the RSS.
            max_partition_fetch_bytes=1024 * 1024,
            fetch_max_bytes=8 * 1024 * 1024,
            persistent=False,
            fetch_max_wait_ms=LONG_POLL_MS,
        )
    )

    @subscriber
    @typed_batch(DigitSubmitted, worker.rejects)
    async def on_submitted(deliveries: list[Delivery[DigitSubmitted]]) -> list[Rejected]:
        model, release = worker.keeper.current, worker.keeper.release
        assert model is not None  # consuming starts only after the first model is in place
        return await worker.handler(model, deliveries, release)

    return subscriber


def describe_broker() -> KafkaBroker:
    """A worker's Kafka endpoints for the AsyncAPI document (nothing connects).

    Consuming `digits.submitted` starts only once a model is loaded; it is registered here so
    that the document shows it.
    """
    worker = build_worker(Settings())
    _submitted_subscriber(worker)
    return worker.broker


def _lifespan(worker: Worker, overrides: Overrides) -> Any:
    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        trace_service(SERVICE, worker.settings)
        end = await (overrides.ledger_end or partial(_ledger_end, worker.settings))()
        worker.keeper.ledger_end_at_start = end
        if end == 0:
            log.warning(
                "no model has been promoted yet; consuming nothing until one is "
                "(drawings wait safely in Kafka): run `mnistream promote VERSION`"
            )
        worker.tasks.append(asyncio.create_task(worker.keeper.run()))
        worker.tasks.append(asyncio.create_task(report_lag(worker.subscribers, worker.metrics.lag)))
        try:
            yield
        finally:
            for task in worker.tasks:
                task.cancel()
            shutdown_tracing()

    return lifespan


async def _ledger_end(settings: Settings) -> int:
    return (await end_offsets(settings, MODEL_PROMOTED)).get(0, 0)


def _rollout_json(keeper: ModelKeeper) -> dict[str, Any] | None:
    """The rollout this worker applies: the ledger's, and whether its candidate is loaded."""
    rollout = keeper.ledger.rollout
    if rollout is None:
        return None
    release = keeper.release
    applied = release is not None and release.rollout.rollout_id == rollout.rollout_id
    return {
        "rollout_id": str(rollout.rollout_id),
        "mode": rollout.started.mode,
        "candidate_version": rollout.started.candidate.version,
        "percent": rollout.percent,
        "candidate_loaded": applied,
        "candidate_error": keeper.candidate_error,
    }


def _healthz() -> Any:
    @get
    async def healthz(scope: Any) -> AsgiResponse:
        return AsgiResponse(b'{"status":"ok"}', 200, {"content-type": "application/json"})

    return healthz


def _readyz(worker: Worker) -> Any:
    @get
    async def readyz(scope: Any) -> AsgiResponse:
        import json

        model = worker.keeper.current
        body: dict[str, Any] = {
            "worker_id": worker.settings.worker_id,
            "consuming": worker.consuming,
            "model": None
            if model is None
            else {
                "version": model.ref.version,
                "sha256": model.ref.sha256,
                "provider": model.provider,
            },
            "last_error": worker.keeper.last_error,
            "fallback": worker.keeper.fallback,
            "rollout": _rollout_json(worker.keeper),
        }
        if model is None:
            body["reason"] = "no model loaded yet; drawings wait in Kafka until one is promoted"
        return AsgiResponse(
            json.dumps(body).encode(), 200 if model else 503, {"content-type": "application/json"}
        )

    return readyz
