"""Planning a job on promotion, and rescoring one chunk of it."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mnistream_common import tracing
from mnistream_common.consume import Publisher
from mnistream_common.events import (
    DigitPredicted,
    ModelPromoted,
    RescoreSkipped,
    RescoreTask,
    SkippedDrawing,
    Timings,
)
from mnistream_common.history_api import ModelInputsOut
from mnistream_common.history_client import HistoryClient, HistoryUnavailableError
from mnistream_common.logs import get_logger
from mnistream_common.rescore import JobSpec, job_id_for, publish_plan, task_key
from mnistream_serving.batch import prediction_event, score_inputs
from mnistream_serving.loader import ModelCache, ModelUnavailableError
from mnistream_serving.model import ModelRejectedError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from rescore_worker.ledger import Ledger

log = get_logger(__name__)
SKIPPED_PER_RECORD = 1000  # reasons are at most 500 characters: under 600 KB a record


@dataclass
class Planner:
    """On a promotion, publish the chunks of a job that rescores every stored drawing."""

    history: HistoryClient
    tasks: Publisher
    ledger_end: Callable[[], Awaitable[int]]
    chunk_size: int
    # When set, a promotion whose model cannot be used (no such object, a wrong checksum) is
    # not planned: every chunk of its job would only be dead-lettered.
    models: ModelCache | None = None
    # When set, awaited before the stored drawings are listed: until history-service has
    # stored what was submitted before the promotion (bounded), so a drawing uploaded just
    # before it, read live by the old champion, is in the plan too.
    history_caught_up: Callable[[], Awaitable[None]] | None = None

    async def __call__(self, event: ModelPromoted, offset: int) -> int:
        """Plan (unless a newer promotion exists); returns the number of chunks published."""
        if offset < await self.ledger_end() - 1:
            log.info("promotion superseded; not planning", version=event.model.version)
            return 0
        if self.models is not None:
            try:
                await self.models.get(event.model, event.onnx_uri)
            except ModelRejectedError as exc:
                log.error(
                    "promotion not planned: its model cannot be used",
                    version=event.model.version,
                    error=str(exc),
                )
                return 0
            except ModelUnavailableError as exc:
                # Storage is down: that says nothing about the model. Plan as before; the
                # chunks wait for storage with their own backoff.
                log.warning("model not checked before planning", error=str(exc))
        job = JobSpec(job_id_for(event), "rescore", event.model, event.onnx_uri)
        if self.history_caught_up is not None:
            await self.history_caught_up()
        drawings = await self._publish_plan(job)
        log.info(
            "rescore planned",
            job_id=str(job.job_id),
            version=event.model.version,
            drawings=drawings,
            chunks=math.ceil(drawings / self.chunk_size),
        )
        return math.ceil(drawings / self.chunk_size)

    async def _publish_plan(self, job: JobSpec) -> int:
        # history-service may still be starting (or restarting): wait for it rather than
        # redelivering the promotion in a tight loop. A plan cut short is planned again whole
        # (the same chunks for the drawings it covered: scoring them twice counts them once).
        carried = tracing.headers()

        async def publish(task: RescoreTask) -> None:
            # The promotion's trace goes on to every chunk it planned (not to each rescored
            # drawing: a trace of millions of spans shows nothing).
            await self.tasks.publish(task.to_bytes(), key=task_key(task), headers=carried)

        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(HistoryUnavailableError),
            wait=wait_exponential(multiplier=0.5, max=10),
            stop=stop_after_delay(600),
            reraise=True,
            before_sleep=lambda state: log.warning(
                "history-service unavailable; planning waits",
                error=repr(state.outcome.exception() if state.outcome else None),
            ),
        ):
            with attempt:
                # Drawings stored by now (history has caught up with what was submitted before
                # the promotion): those arriving later are read by the new champion live.
                until = datetime.now(UTC)
                return await publish_plan(self.history, publish, job, self.chunk_size, until)
        raise AssertionError("unreachable: tenacity reraises")


@dataclass
class Pace:
    """At most `rate` drawings a second (0: no limit): a chunk of n drawings holds the next
    chunk back for n / rate seconds. Time not used is not saved up, so a worker idle for an
    hour does not then rescore in a burst."""

    rate: float = 0.0
    clock: Callable[[], float] = time.monotonic
    _next: float = 0.0

    async def take(self, count: int) -> float:
        """Wait for `count` drawings' turn; returns the seconds waited."""
        if not self.rate:
            return 0.0
        now = self.clock()
        start = max(now, self._next)
        self._next = start + count / self.rate
        waited = start - now
        if waited > 0:
            await asyncio.sleep(waited)
        return waited


@dataclass
class ChunkScorer:
    """Read a chunk's model inputs from history-service in one request, score them with the
    job's model in one session.run, publish the `rescore` predictions, and the drawings that
    could not be scored on `rescore.skipped` (they count as done: the job still finishes)."""

    models: ModelCache
    history: HistoryClient
    predicted: Publisher
    skipped: Publisher
    ledger: Ledger
    worker_id: str
    pace: Pace = field(default_factory=Pace)

    async def __call__(self, task: RescoreTask) -> int:
        """Score one chunk; returns how many predictions were published (acknowledged)."""
        if task.kind == "rescore" and self.ledger.superseded(task.job_id):
            log.info(
                "chunk skipped: a newer promotion superseded its job",
                job_id=str(task.job_id),
                chunk=task.chunk_index,
            )
            return 0
        started = time.perf_counter()
        model = await self.models.get(task.model, task.onnx_uri)
        paced = await self.pace.take(len(task.digit_ids))
        found = await self.history.model_inputs(task.digit_ids)
        await self._report_skipped(task, found)
        fetched = time.perf_counter() - paced  # the fetch's time, not the pace's
        items = [(i.digit_id, i.model_input) for i in found.inputs]
        result = await asyncio.to_thread(score_inputs, model, items)
        timings = Timings(
            queue_ms=round((fetched - started) * 1000, 3),
            preprocess_ms=0.0,
            inference_ms=round(result.inference_ms, 3),
            batch_size=max(1, len(result.scored)),
        )
        events = [
            self._event(task, s.item, s.probabilities, timings, model.provider)
            for s in result.scored
        ]
        await asyncio.gather(
            *(self.predicted.publish(e.to_bytes(), key=str(e.digit_id).encode()) for e in events)
        )
        log.info(
            "chunk scored",
            job_id=str(task.job_id),
            chunk=task.chunk_index,
            kind=task.kind,
            model_version=task.model.version,
            count=len(events),
        )
        return len(events)

    async def _report_skipped(self, task: RescoreTask, found: ModelInputsOut) -> None:
        skipped = [SkippedDrawing(digit_id=d, reason="not stored") for d in found.missing] + [
            SkippedDrawing(digit_id=item.digit_id, reason=item.reason[:500] or "unreadable")
            for item in found.unusable
        ]
        # In parts, so that a record stays far below the topic's 1 MiB whatever the reasons.
        parts = [
            skipped[i : i + SKIPPED_PER_RECORD] for i in range(0, len(skipped), SKIPPED_PER_RECORD)
        ]
        for part in parts:
            event = RescoreSkipped(
                job_id=task.job_id,
                kind=task.kind,
                model=task.model,
                chunk_index=task.chunk_index,
                job_total=task.job_total,
                skipped=part,
                worker_id=self.worker_id,
            )
            await self.skipped.publish(event.to_bytes(), key=str(task.job_id).encode())
        if found.missing:
            log.error(
                "drawings of the chunk are not stored; skipped",
                job_id=str(task.job_id),
                digit_ids=[str(d) for d in found.missing[:20]],
                count=len(found.missing),
            )
        for item in found.unusable:
            log.warning(
                "stored drawing cannot be read by a model; skipped",
                job_id=str(task.job_id),
                digit_id=str(item.digit_id),
                error=item.reason,
            )

    def _event(
        self,
        task: RescoreTask,
        digit_id: uuid.UUID,
        probabilities: Any,
        timings: Timings,
        provider: str,
    ) -> DigitPredicted:
        return prediction_event(
            digit_id=digit_id,
            probabilities=probabilities,
            model=task.model,
            kind=task.kind,
            timings=timings,
            worker_id=self.worker_id,
            provider=provider,
            job_id=task.job_id,
            job_total=task.job_total,
        )
