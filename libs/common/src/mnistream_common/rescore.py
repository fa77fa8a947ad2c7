"""Splitting a rescore or evaluation job into `rescore.tasks` chunks (planner and CLI)."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from mnistream_common.events import ModelPromoted, ModelRef, RescoreTask

# Job ids derive from the promotion's event id, so a redelivered promotion plans the same job.
JOB_NAMESPACE = uuid.UUID("5b1d7c1e-6f0a-4a43-9d56-2f1f4f7f3c11")
# Chunks a plan keeps waiting for Kafka's acknowledgement at once.
SENDS_IN_FLIGHT = 16


def job_id_for(promotion: ModelPromoted) -> uuid.UUID:
    """The job that rescores the history for one promotion."""
    return job_id_of_promotion(promotion.event_id)


def job_id_of_promotion(event_id: uuid.UUID) -> uuid.UUID:
    """The rescore job of the promotion with this event id."""
    return uuid.uuid5(JOB_NAMESPACE, str(event_id))


@dataclass(frozen=True)
class JobSpec:
    """What every chunk of one job says: the job, its kind, the model to read with."""

    job_id: uuid.UUID
    kind: Literal["rescore", "candidate"]
    model: ModelRef
    onnx_uri: str

    def chunk(self, index: int, count: int, total: int, ids: Sequence[uuid.UUID]) -> RescoreTask:
        """Chunk `index` of `count`, of a job over `total` drawings."""
        return RescoreTask(
            job_id=self.job_id,
            kind=self.kind,
            model=self.model,
            onnx_uri=self.onnx_uri,
            chunk_index=index,
            chunk_count=count,
            job_total=total,
            digit_ids=list(ids),
        )


def plan_chunks(
    job_id: uuid.UUID,
    kind: Literal["rescore", "candidate"],
    model: ModelRef,
    onnx_uri: str,
    digit_ids: Sequence[uuid.UUID],
    chunk_size: int,
) -> list[RescoreTask]:
    """Every drawing of `digit_ids` exactly once, in chunks of at most `chunk_size`."""
    job = JobSpec(job_id, kind, model, onnx_uri)
    count = math.ceil(len(digit_ids) / chunk_size)
    return [
        job.chunk(index, count, len(digit_ids), digit_ids[start : start + chunk_size])
        for index, start in enumerate(range(0, len(digit_ids), chunk_size))
    ]


class StoredIds(Protocol):
    """Where a plan reads the stored drawing ids from (history-service's client)."""

    async def stored_count(self, until: datetime | None = None) -> int: ...

    def stored_id_pages(
        self, *, until: datetime | None = None
    ) -> AsyncIterator[list[uuid.UUID]]: ...


async def publish_plan(
    history: StoredIds,
    publish: Callable[[RescoreTask], Awaitable[object]],
    job: JobSpec,
    chunk_size: int,
    until: datetime,
    in_flight: int = SENDS_IN_FLIGHT,
) -> int:
    """Publish the chunks of `job` over every drawing stored by `until`; returns how many.

    The ids are read a page at a time and at most `in_flight` chunks wait for Kafka, so a plan
    over ten million drawings holds one page of ids, not all of them. The count is taken first
    (every chunk carries the job's total and chunk count) and the ids are planned in ascending
    order up to it, so planning the same job again over the same drawings publishes the same
    chunks under the same keys: a planner killed halfway plans again idempotently (the chunks it
    had published are scored again, and counted once).
    """
    total = await history.stored_count(until)
    count = math.ceil(total / chunk_size)
    window = _SendWindow(in_flight)
    planned, index, pending = 0, 0, list[uuid.UUID]()
    async for page in history.stored_id_pages(until=until):
        for digit_id in page[: total - planned]:
            pending.append(digit_id)
            if len(pending) == chunk_size:
                await window.send(publish, job.chunk(index, count, total, pending))
                index, pending = index + 1, []
        planned += min(len(page), total - planned)
        if planned == total:
            break
    if pending:
        await window.send(publish, job.chunk(index, count, total, pending))
    await window.drain()
    return planned


class _SendWindow:
    """At most `size` sends in flight; the first failure is raised (the rest are cancelled)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._sending: set[asyncio.Task[object]] = set()

    async def send(
        self, publish: Callable[[RescoreTask], Awaitable[object]], task: RescoreTask
    ) -> None:
        if len(self._sending) >= self._size:
            done, self._sending = await asyncio.wait(
                self._sending, return_when=asyncio.FIRST_COMPLETED
            )
            self._raise_first(done)
        self._sending.add(asyncio.ensure_future(publish(task)))

    async def drain(self) -> None:
        if self._sending:
            done, self._sending = await asyncio.wait(self._sending)
            self._raise_first(done)

    def _raise_first(self, done: set[asyncio.Task[object]]) -> None:
        for task in done:
            if (error := task.exception()) is not None:
                for other in self._sending:
                    other.cancel()
                raise error


def task_key(task: RescoreTask) -> bytes:
    """Kafka key of a task: job id and chunk index, so one job's chunks spread over partitions.

    Keying by the job id alone would put a whole job on one partition, and so on one worker.
    """
    return f"{task.job_id}:{task.chunk_index}".encode()
