"""Erasing a drawing: the operator's request becomes an entry of the erasure ledger.

    POST /admin/erasures ──▶ digits.submitted (a tombstone of the drawing's key: compaction
                        │    removes the drawing, image and client details, from the log)
                        └──▶ digits.erased (DigitErased, the ledger)

history-service applies the ledger like any topic it consumes (`HistoryWriter.erasures`): the
drawing's rows leave PostgreSQL, its image leaves MinIO, and from then on nothing of it is stored
again, whether it arrives late, is redelivered, or is replayed (a replay applies the whole ledger
before it reads anything else). The request waits a few seconds for that, and says whether it saw
it happen.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from aiokafka.errors import KafkaError
from mnistream_common.events import DigitErased, utc_now
from mnistream_common.history_api import EraseIn, EraseOut
from mnistream_common.kafka import durable_producer
from mnistream_common.settings import KafkaSettings
from mnistream_common.topics import DIGITS_ERASED, DIGITS_SUBMITTED
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from history_service.admin import ErasureUnavailableError, NotStoredError
from history_service.db import Drawing, Erasure

# How long a request waits to see its erasure applied before it answers "pending".
APPLIED_WAIT_S = 15.0


@dataclass(frozen=True)
class Eraser:
    """Writes erasures to the ledger and waits for this service to apply them."""

    kafka: KafkaSettings
    engine: AsyncEngine
    wait_s: float = APPLIED_WAIT_S

    async def erase(self, request: EraseIn) -> EraseOut:
        """Erase a stored drawing (or say when it already was); raises NotStoredError for an
        id that is neither, so a mistyped id writes nothing to a ledger kept forever."""
        digit_id = request.digit_id
        earlier = await self._erased_at(digit_id)
        if earlier is not None:
            # Its tombstone again: the request that erased it may have failed after the ledger
            # took it and before the tombstone was written (a repeated tombstone is harmless).
            await self._publish(digit_id, None)
            return EraseOut(digit_id=digit_id, erased_at=earlier, applied=True, already_erased=True)
        if not await self._stored(digit_id):
            raise NotStoredError(
                f"no drawing {digit_id} is stored; one uploaded a moment ago is stored within "
                "seconds: try again then"
            )
        event = DigitErased(
            digit_id=digit_id,
            erased_at=utc_now(),
            requested_by=request.requested_by,
            reason=request.reason,
        )
        await self._publish(digit_id, event)
        return EraseOut(
            digit_id=digit_id,
            erased_at=event.erased_at,
            applied=await self._applied(digit_id),
            already_erased=False,
        )

    async def _publish(self, digit_id: uuid.UUID, event: DigitErased | None) -> None:
        """The tombstone first, then (for a new erasure) the ledger entry: a failure between
        the two leaves no ledger entry, so the request is simply repeated."""
        key = str(digit_id).encode()
        try:
            async with durable_producer(self.kafka) as producer:
                await producer.send_and_wait(DIGITS_SUBMITTED.name, None, key=key)
                if event is not None:
                    await producer.send_and_wait(DIGITS_ERASED.name, event.to_bytes(), key=key)
        except (KafkaError, TimeoutError) as exc:
            raise ErasureUnavailableError(
                f"Kafka did not take the erasure ({exc!r}); nothing was erased: try again "
                "once Kafka answers"
            ) from exc

    async def _applied(self, digit_id: uuid.UUID) -> bool:
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline:
            if await self._erased_at(digit_id) is not None and not await self._stored(digit_id):
                return True
            await asyncio.sleep(0.1)
        return False

    async def _erased_at(self, digit_id: uuid.UUID) -> datetime | None:
        async with self.engine.connect() as connection:
            found = await connection.execute(
                select(Erasure.erased_at).where(Erasure.digit_id == digit_id)
            )
        return found.scalar_one_or_none()

    async def _stored(self, digit_id: uuid.UUID) -> bool:
        async with self.engine.connect() as connection:
            found = await connection.execute(
                select(Drawing.digit_id).where(Drawing.digit_id == digit_id)
            )
        return found.first() is not None
