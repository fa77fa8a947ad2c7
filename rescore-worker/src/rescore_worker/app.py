"""Composition root of the rescore worker: planner, chunk consumer, ledger tracker, probes."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
from faststream import AckPolicy
from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.kafka import KafkaBroker
from mnistream_common.consume import (
    Backoff,
    DeadLetterRejects,
    Delivery,
    LogRejects,
    Rejected,
    typed_batch,
)
from mnistream_common.events import LedgerEntry, LedgerRecords, ModelPromoted, RescoreTask
from mnistream_common.history_client import HistoryClient
from mnistream_common.kafka import (
    LONG_POLL_MS,
    KafkaProbe,
    make_broker,
    promotions_end,
    wait_for_group,
)
from mnistream_common.logs import configure_logging, get_logger
from mnistream_common.metrics import report_lag
from mnistream_common.storage import ObjectStore, make_minio
from mnistream_common.topics import (
    DIGITS_DEADLETTER,
    DIGITS_PREDICTED,
    DIGITS_SUBMITTED,
    MODEL_PROMOTED,
    RESCORE_SKIPPED,
    RESCORE_TASKS,
    Groups,
)
from mnistream_common.tracing import shutdown_tracing, trace_service
from mnistream_serving.loader import ModelCache
from mnistream_serving.model import ModelRejectedError, RuntimeOptions
from mnistream_serving.registry import RegistryCheck
from prometheus_client import make_asgi_app

from rescore_worker.handlers import ChunkScorer, Pace, Planner
from rescore_worker.ledger import Ledger
from rescore_worker.metrics import RescoreMetrics
from rescore_worker.settings import Settings

log = get_logger(__name__)
SERVICE = "rescore-worker"
# history-service dead-letters an invalid ledger record once; every reader of it skips it.
SKIP_INVALID_PROMOTIONS = LogRejects("an invalid promotion; history-service dead-letters it")


@dataclass(frozen=True)
class Overrides:
    """What the worker talks to, replaced in component tests. Left empty, the lifespan connects
    to the real ones: object storage (models), history-service (ids and model inputs), the
    MLflow registry (each promoted model checked there), and Kafka for the ledger's end."""

    store: ObjectStore | None = None
    history_transport: httpx.AsyncBaseTransport | None = None
    ledger_end: Callable[[], Awaitable[int]] | None = None
    registry_transport: httpx.AsyncBaseTransport | None = None
    history_caught_up: Callable[[], Awaitable[None]] | None = None


@dataclass(frozen=True)
class Parts:
    """What the subscribers call; built from the settings, its clients connect on first use."""

    history: HistoryClient
    planner: Planner
    scorer: ChunkScorer
    ledger: Ledger
    rejects: DeadLetterRejects
    backoff: Backoff = field(default_factory=Backoff)  # after a chunk failed not by its fault


def create_app(
    settings: Settings | None = None, overrides: Overrides | None = None
) -> AsgiFastStream:
    """Build the worker; clients are made and connect in the lifespan."""
    settings = settings or Settings()
    configure_logging(SERVICE, level=settings.log_level, json=settings.log_json)
    broker = make_broker(settings, client_id=settings.worker_id, log_level=logging.DEBUG)
    metrics = RescoreMetrics()
    return AsgiFastStream(
        broker,
        logger=logging.getLogger("mnistream.app"),
        lifespan=_lifespan(settings, broker, metrics, overrides or Overrides()),
        asgi_routes=[
            ("/healthz", _probe(None)),
            ("/readyz", _probe(KafkaProbe(settings))),
            ("/metrics", make_asgi_app(metrics.registry)),
        ],
    )


def build_parts(
    settings: Settings, broker: KafkaBroker, metrics: RescoreMetrics, overrides: Overrides
) -> Parts:
    """The planner and the chunk scorer with their clients and publishers."""
    history = HistoryClient.at(settings.history_url, transport=overrides.history_transport)
    store = overrides.store or ObjectStore(make_minio(settings))
    options = RuntimeOptions(
        settings.onnx_threads, settings.prefer_gpu, settings.rescore_chunk_size
    )
    ledger = Ledger()
    ledger_end = overrides.ledger_end or partial(_ledger_end, settings)
    registry = RegistryCheck(settings.mlflow_tracking_uri, overrides.registry_transport)
    models = ModelCache(store, options, settings.artifacts_bucket, registry)
    planner = Planner(
        history,
        broker.publisher(RESCORE_TASKS.name),
        ledger_end,
        settings.rescore_chunk_size,
        models,
        overrides.history_caught_up or partial(_history_caught_up, settings),
    )
    scorer = ChunkScorer(
        models,
        history,
        broker.publisher(DIGITS_PREDICTED.name),
        broker.publisher(RESCORE_SKIPPED.name),
        ledger,
        settings.worker_id,
        Pace(settings.rescore_max_rate),
    )
    rejects = DeadLetterRejects(
        broker.publisher(DIGITS_DEADLETTER.name), SERVICE, metrics.dead_letters
    )
    return Parts(history, planner, scorer, ledger, rejects)


async def _ledger_end(settings: Settings) -> int:
    # Promotions only: a rollout step after a promotion does not supersede its rescore.
    return await promotions_end(settings)


CATCH_UP_S = 60.0


async def _history_caught_up(settings: Settings, within_s: float = CATCH_UP_S) -> None:
    """Until the history group has committed, on every partition of digits.submitted, the end
    offset seen now (it commits after storing), or `within_s` has passed: then, or if Kafka
    cannot say, planning goes on with what is stored, and says so."""
    try:
        behind = await wait_for_group(settings, Groups.HISTORY, DIGITS_SUBMITTED, within_s)
    except Exception as exc:  # Kafka unreachable: the plan must not wait on it
        log.warning(
            "history-service's progress unknown; planning with what it has stored", error=repr(exc)
        )
        return
    if behind:
        log.warning(
            "history-service is still behind on digits.submitted; planning with the drawings "
            "it has stored",
            behind=behind,
            waited_s=within_s,
        )


def subscribe(broker: KafkaBroker, parts: Parts, metrics: RescoreMetrics) -> Any:
    """Register the ledger tracker, the planner and the chunk consumer; returns the last."""
    _track_ledger(broker, parts)
    _plan_promotions(broker, parts)
    return _rescore_chunks(broker, parts, metrics)


def _track_ledger(broker: KafkaBroker, parts: Parts) -> None:
    # Every instance reads the whole ledger (no group) to know which promotion is the newest.
    @broker.subscriber(
        MODEL_PROMOTED.name, auto_offset_reset="earliest", fetch_max_wait_ms=LONG_POLL_MS
    )
    @typed_batch(LedgerRecords, SKIP_INVALID_PROMOTIONS)
    async def track(deliveries: list[Delivery[LedgerEntry]]) -> list[Rejected]:
        for delivery in deliveries:
            if isinstance(delivery.event, ModelPromoted):  # a rollout step rescores nothing
                parts.ledger.record(delivery.event, delivery.record.offset)
        return []


def _plan_promotions(broker: KafkaBroker, parts: Parts) -> None:
    # At least one planner per promotion; planning the same job twice is harmless.
    @broker.subscriber(
        MODEL_PROMOTED.name,
        group_id=Groups.RESCORE_PLANNER,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        fetch_max_wait_ms=LONG_POLL_MS,
    )
    @typed_batch(LedgerRecords, SKIP_INVALID_PROMOTIONS)
    async def plan(deliveries: list[Delivery[LedgerEntry]]) -> list[Rejected]:
        for delivery in deliveries:
            if isinstance(delivery.event, ModelPromoted):
                await parts.planner(delivery.event, delivery.record.offset)
        return []


def _rescore_chunks(broker: KafkaBroker, parts: Parts, metrics: RescoreMetrics) -> Any:
    tasks = broker.subscriber(
        RESCORE_TASKS.name,
        group_id=Groups.RESCORE,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        max_poll_interval_ms=600_000,
        fetch_max_wait_ms=LONG_POLL_MS,
    )

    backoff = parts.backoff

    @tasks
    @typed_batch(RescoreTask, parts.rejects)
    async def rescore(deliveries: list[Delivery[RescoreTask]]) -> list[Rejected]:
        rejected = []
        for delivery in deliveries:
            task = delivery.event
            try:
                count = await parts.scorer(task)
            except ModelRejectedError as exc:
                # Redelivering would fail the same way forever and block the partition.
                rejected.append(
                    Rejected(delivery.record, f"model v{task.model.version} rejected: {exc}")
                )
                continue
            except Exception as exc:
                # history-service unreachable, onnxruntime failing: not the task's fault, and a
                # dead-lettered chunk would leave its job unfinished; read it again, after a
                # pause that grows (never a hot loop).
                paused = await backoff.wait()
                log.error("chunk failed; it will be read again", error=repr(exc), paused_s=paused)
                raise
            backoff.reset()
            metrics.rescored.labels(model_version=str(task.model.version), kind=task.kind).inc(
                count
            )
        return rejected

    return tasks


def describe_broker() -> KafkaBroker:
    """A rescore worker's Kafka endpoints for the AsyncAPI document (nothing connects)."""
    settings = Settings()
    broker = make_broker(settings, client_id=SERVICE)
    metrics = RescoreMetrics()
    subscribe(broker, build_parts(settings, broker, metrics, Overrides()), metrics)
    return broker


def _lifespan(
    settings: Settings, broker: KafkaBroker, metrics: RescoreMetrics, overrides: Overrides
) -> Callable[[], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        trace_service(SERVICE, settings)
        parts = build_parts(settings, broker, metrics, overrides)
        tasks = subscribe(broker, parts, metrics)  # before the broker starts, which starts them
        reporter = asyncio.create_task(report_lag([(Groups.RESCORE, tasks)], metrics.lag))
        try:
            yield
        finally:
            reporter.cancel()
            await parts.history.close()
            shutdown_tracing()

    return lifespan


def _probe(kafka: KafkaProbe | None) -> Any:
    """/healthz (no `kafka`): the process is up; /readyz: Kafka answers too."""

    @get
    async def probe(scope: Any) -> AsgiResponse:
        if kafka is None:
            return AsgiResponse(b'{"status":"ok"}', 200, {"content-type": "application/json"})
        ok = await kafka.reachable()
        body = json.dumps({"ready": ok}).encode()
        return AsgiResponse(body, 200 if ok else 503, {"content-type": "application/json"})

    return probe
