"""The gateway as a component: its FastAPI app over the ASGI transport, FastStream's in-memory
TestKafkaBroker in place of Kafka, and a fake history-service behind httpx's MockTransport.

A fake inference worker subscribes to `digits.submitted` and, when asked to, answers each
drawing with a `digits.predicted` event, the way the real worker would.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from gateway.app import Overrides, create_app
from gateway.settings import Settings
from mnistream_common.consume import records_of
from mnistream_common.events import DigitPredicted, DigitSubmitted, ModelRef, Timings
from mnistream_common.kafka import make_broker
from mnistream_common.topics import DIGITS_LABELED, DIGITS_PREDICTED, DIGITS_SUBMITTED

from tests.helpers import prediction

MODEL = ModelRef(name="mnist-digits", version=7, sha256="7a" * 32)


@dataclass(frozen=True)
class Record:
    """A record the gateway published, as a consumer would read it."""

    key: bytes | None
    value: bytes
    headers: dict[str, bytes] = field(default_factory=dict)


@dataclass
class FakeHistory:
    """history-service's read API, as far as the gateway uses it."""

    known: set[uuid.UUID] = field(default_factory=set)
    down: bool = False
    requests: list[str] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request.url.path)
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        parts = request.url.path.strip("/").split("/")
        if parts[:2] == ["api", "digits"] and len(parts) == 3:
            if uuid.UUID(parts[2]) in self.known:
                return httpx.Response(200, json={"digit_id": parts[2]})
            return httpx.Response(404, json={"detail": "not found"})
        if request.url.path == "/api/models":
            return httpx.Response(200, json=[{"version": MODEL.version}])
        return httpx.Response(404, json={"detail": f"no route {request.url.path}"})


@dataclass
class FakeWorker:
    """Reads `digits.submitted`; answers with a live prediction while `answering` is set."""

    broker: KafkaBroker
    answering: bool = False
    misaddressed: bool = False  # answer with another drawing's id
    shadow_digit: int | None = None  # a shadow rollout's candidate reads it first, as this
    digit: int = 7
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    replied_at: list[float] = field(default_factory=list)  # loop time each reply was consumed

    def prediction_for(self, event: DigitSubmitted) -> DigitPredicted:
        return prediction(
            uuid.uuid4() if self.misaddressed else event.digit_id,
            MODEL,
            digit=self.digit,
            timings=Timings(queue_ms=1.0, preprocess_ms=0.5, inference_ms=0.5, batch_size=1),
            worker_id="fake-worker",
            submitted_at=event.submitted_at,
        )

    def received(self, event: DigitSubmitted) -> None:
        if not self.answering:
            return
        # Published from a task, so it reaches the gateway while the upload is waiting.
        task = asyncio.create_task(self.answer(event))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def answer(self, event: DigitSubmitted) -> None:
        if self.shadow_digit is not None:
            candidate = MODEL.model_copy(update={"version": MODEL.version + 1})
            shadow = prediction(
                event.digit_id,
                candidate,
                digit=self.shadow_digit,
                kind="shadow",
                rollout_id=uuid.uuid4(),
                submitted_at=event.submitted_at,
            )
            await self.publish(shadow)
        await self.publish(self.prediction_for(event))

    async def publish(self, event: DigitPredicted) -> None:
        # The in-memory broker hands the record to the gateway's subscriber before it returns.
        await self.broker.publish(
            event.to_bytes(), DIGITS_PREDICTED.name, key=str(event.digit_id).encode()
        )
        self.replied_at.append(asyncio.get_running_loop().time())


@dataclass
class Gateway:
    """A running gateway and what it has published."""

    app: FastAPI
    client: httpx.AsyncClient
    broker: KafkaBroker
    history: FakeHistory
    worker: FakeWorker
    submitted: list[Record]
    labeled: list[Record]

    @property
    def submitted_events(self) -> list[DigitSubmitted]:
        return [DigitSubmitted.from_bytes(r.value) for r in self.submitted]


def gateway_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": "kafka.invalid:9092",  # never reached: the broker is faked
        "history_url": "http://history.test",
        "web_dir": Path("/nonexistent/web"),
        "log_json": False,
        "log_level": "WARNING",
        **overrides,
    }
    return Settings(**values)


@asynccontextmanager
async def running_gateway(**overrides: Any) -> AsyncIterator[Gateway]:
    """Start a gateway on an in-memory broker; yields once its lifespan has run."""
    settings = gateway_settings(**overrides)
    broker = make_broker(settings, client_id="gateway-under-test")
    history = FakeHistory()
    worker = FakeWorker(broker)
    submitted: list[Record] = []
    labeled: list[Record] = []

    @broker.subscriber(DIGITS_SUBMITTED.name, group_id="fake-inference")
    async def fake_inference(msg: KafkaMessage) -> None:
        for record in records_of(msg):
            submitted.append(Record(record.key, record.value or b"", dict(record.headers)))
            worker.received(DigitSubmitted.from_bytes(record.value or b""))

    @broker.subscriber(DIGITS_LABELED.name, group_id="fake-history")
    async def fake_history_consumer(msg: KafkaMessage) -> None:
        labeled.extend(Record(r.key, r.value or b"") for r in records_of(msg))

    edges = Overrides(
        kafka_ready=lambda: broker.ping(timeout=1.0),  # looked up late: TestKafkaBroker patches it
        broker=broker,
        ledger_end=_empty_ledger,
        history_transport=httpx.MockTransport(history.handle),
    )
    app = create_app(settings, edges)
    async with (
        TestKafkaBroker(broker),
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://gateway.test"
        ) as client,
    ):
        yield Gateway(app, client, broker, history, worker, submitted, labeled)
        for task in list(worker.tasks):
            await task


async def _empty_ledger() -> int:
    return 0


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    """A gateway with the default settings (rate limit high enough not to matter)."""
    async with running_gateway() as running:
        yield running
