"""Helpers for the reliability suite: steady upload traffic, the nothing-lost audit, Kafka taps.

The audit reads what users rely on from the real stores: a row in Postgres and an object in
MinIO for every upload the gateway accepted, and a live prediction by the champion of that
moment. Counts of each fault are printed and collected for the terminal summary.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from aiokafka import AIOKafkaConsumer
from minio.error import S3Error
from mnistream_common.events import DeadLetter
from mnistream_common.storage import drawing_key, make_minio
from mnistream_common.topics import DIGITS_DEADLETTER
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.e2e.support import Predictions, tail
from tests.polling import eventually
from tests.stack import require_minio, require_postgres

# Lines for the terminal summary: one per fault, so the counts show without -s.
REPORT: list[str] = []


@dataclass
class Traffic:
    """Uploads at a steady rate until stopped; remembers every id answered 202/200."""

    gateway_url: str
    images: Sequence[bytes]
    rate: float = 40.0
    max_in_flight: int = 64
    sent: int = 0
    accepted: list[uuid.UUID] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Send until `stop()`; then wait for the answers still in flight."""
        limits = httpx.Limits(max_connections=self.max_in_flight)
        async with httpx.AsyncClient(
            base_url=self.gateway_url, timeout=60.0, limits=limits
        ) as client:
            gate = asyncio.Semaphore(self.max_in_flight)
            in_flight: set[asyncio.Task[None]] = set()
            loop = asyncio.get_running_loop()
            next_at = loop.time()
            while not self._stop.is_set():
                await gate.acquire()
                image = self.images[self.sent % len(self.images)]
                self.sent += 1
                task = asyncio.create_task(self._upload(client, image, gate))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                # Steady, not bursty: after a stall the schedule restarts from now.
                next_at = max(next_at + 1 / self.rate, loop.time())
                await asyncio.sleep(next_at - loop.time())
            await asyncio.gather(*in_flight)

    async def _upload(
        self, client: httpx.AsyncClient, image: bytes, gate: asyncio.Semaphore
    ) -> None:
        try:
            response = await client.post(
                "/api/predictions", files={"image": ("digit.png", image, "image/png")}
            )
            if response.status_code in (200, 202):
                self.accepted.append(uuid.UUID(response.json()["digit_id"]))
            else:
                self.refused[str(response.status_code)] += 1
        except httpx.HTTPError as exc:
            self.refused[type(exc).__name__] += 1
        finally:
            gate.release()

    def stop(self) -> None:
        """Stop sending (answers in flight are still awaited by `run`)."""
        self._stop.set()

    async def until_accepted(self, count: int, within: float = 60.0) -> None:
        """Wait until `count` more uploads than now have been accepted."""
        target = len(self.accepted) + count
        await eventually(lambda: len(self.accepted) >= target, within, f"{count} uploads accepted")


@asynccontextmanager
async def flowing(
    gateway_url: str, images: Sequence[bytes], rate: float = 40.0
) -> AsyncIterator[Traffic]:
    """Uploads flow at `rate` per second while the block runs (and are answered after it)."""
    traffic = Traffic(gateway_url, images, rate)
    task = asyncio.create_task(traffic.run())
    try:
        await traffic.until_accepted(min(50, int(rate * 2)))
        yield traffic
    finally:
        traffic.stop()
        await task


@dataclass
class DeadLetters:
    """Dead letters published since the tap started."""

    consumer: AIOKafkaConsumer
    letters: list[DeadLetter] = field(default_factory=list)

    async def read(self) -> list[DeadLetter]:
        """Fetch what has arrived since the last read; returns everything so far."""
        batch = await self.consumer.getmany(timeout_ms=300, max_records=500)
        for records in batch.values():
            self.letters.extend(DeadLetter.from_bytes(r.value or b"") for r in records)
        return self.letters

    def about(self, key: bytes) -> list[DeadLetter]:
        """The dead letters of records with this key."""
        return [d for d in self.letters if d.source_key == key]


@asynccontextmanager
async def dead_letters() -> AsyncIterator[DeadLetters]:
    """A tap on `digits.deadletter` from its current end."""
    async with tail(DIGITS_DEADLETTER) as consumer:
        yield DeadLetters(consumer)


@dataclass(frozen=True)
class Audit:
    """What the stores hold for a list of accepted uploads."""

    accepted: int
    stored: int
    with_image: int
    predicted: int

    @property
    def complete(self) -> bool:
        """Every accepted upload has its row, its object and a prediction by the champion."""
        return self.accepted == self.stored == self.with_image == self.predicted


async def audit(ids: Sequence[uuid.UUID], champions: Sequence[int]) -> Audit:
    """Count stored drawings, their images, and live predictions by `champions`."""
    unique = list(set(ids))
    engine = create_async_engine(require_postgres())
    try:
        async with engine.connect() as conn:
            stored = (
                await conn.execute(
                    text("SELECT digit_id FROM drawings WHERE digit_id = ANY(:ids)"),
                    {"ids": unique},
                )
            ).scalars()
            stored_ids = list(stored)
            predicted = await conn.execute(
                text(
                    "SELECT count(DISTINCT digit_id) FROM predictions "
                    "WHERE digit_id = ANY(:ids) AND model_version = ANY(:versions) "
                    "AND kind = 'live'"
                ),
                {"ids": unique, "versions": list(champions)},
            )
            predicted_count = int(predicted.scalar_one())
    finally:
        await engine.dispose()
    with_image = await asyncio.to_thread(_count_objects, stored_ids)
    return Audit(len(unique), len(stored_ids), with_image, predicted_count)


def _count_objects(ids: Sequence[uuid.UUID]) -> int:
    settings = require_minio()
    client = make_minio(settings)

    def exists(digit_id: uuid.UUID) -> bool:
        try:
            client.stat_object(settings.drawings_bucket, drawing_key(digit_id))
        except S3Error:
            return False
        return True

    with ThreadPoolExecutor(max_workers=8) as pool:
        return sum(pool.map(exists, ids))


async def assert_nothing_lost(
    fault: str,
    traffic: Traffic,
    predictions: Predictions,
    champions: Sequence[int],
    *,
    started: float,
    within: float = 240.0,
) -> Audit:
    """Wait until every accepted upload is stored and predicted; print and record the counts."""
    ids = traffic.accepted
    assert len(ids) == len(set(ids)), "the gateway answered two uploads with one id"
    last: list[Audit] = []

    async def settled() -> bool:
        last[:] = [await audit(ids, champions)]
        return last[0].complete and not predictions.missing(ids)

    try:
        await eventually(settled, within, f"{fault}: every accepted upload stored and predicted", 2)
    finally:
        _report(fault, traffic, predictions, last[0] if last else None, started)
    return last[0]


def _report(
    fault: str, traffic: Traffic, predictions: Predictions, result: Audit | None, started: float
) -> None:
    ids = set(traffic.accepted)
    events = sum(1 for d in ids for p in predictions.by_digit.get(d, []) if p.kind == "live")
    predicted_ids = sum(1 for d in ids if predictions.by_digit.get(d))
    refused = ", ".join(f"{k}×{v}" for k, v in sorted(traffic.refused.items())) or "none"
    counts = (
        f"sent={traffic.sent} accepted={len(ids)} "
        f"stored={result.stored if result else '?'} "
        f"with_image={result.with_image if result else '?'} "
        f"predicted={result.predicted if result else '?'} "
        f"duplicates_absorbed={events - predicted_ids} refused={refused} "
        f"took={time.monotonic() - started:.0f}s"
    )
    line = f"{fault}: {counts}"
    print(f"\n[reliability] {line}")
    REPORT.append(line)


async def serving_version(gateway_url: str) -> int:
    """The version the gateway's ledger says is serving."""
    async with httpx.AsyncClient(base_url=gateway_url, timeout=10) as client:
        body = (await client.get("/readyz")).json()
    version: int = body["model"]["version"]
    return version
