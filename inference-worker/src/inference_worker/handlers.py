"""One batch of drawings: preprocess, infer once, publish; the caller commits after."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from mnistream_common import tracing
from mnistream_common.consume import Backoff, Delivery, Failure, Rejected
from mnistream_common.events import (
    DigitPredicted,
    DigitSubmitted,
    PredictionKind,
    Timings,
    utc_now,
)
from mnistream_common.kafka import Record
from mnistream_common.logs import get_logger
from mnistream_common.preprocessing import PreprocessError, peek
from mnistream_serving.batch import (
    BatchResult,
    Failed,
    Scored,
    prediction_event,
    prepare_inputs,
    score_inputs,
)
from mnistream_serving.model import LoadedModel, Probabilities
from opentelemetry import trace
from opentelemetry.context import Context

from inference_worker.keeper import Release
from inference_worker.metrics import WorkerMetrics

log = get_logger(__name__)
SERVICE = "inference-worker"
# Pixels of version 1 drawings decoded in one go: two images of the largest accepted size
# (2048 × 2048), about 0.2 s of one core.
PIXEL_BUDGET = 2 * 2048 * 2048


class Publisher(Protocol):
    """The part of a FastStream publisher the handler uses."""

    async def publish(
        self, message: Any, *, key: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Any: ...


def score_drawings(
    model: LoadedModel, deliveries: Sequence[Delivery[DigitSubmitted]]
) -> BatchResult[Delivery[DigitSubmitted]]:
    """One session.run over the batch's model inputs; a v1 drawing's input is made here."""
    started = time.perf_counter()
    inputs: list[tuple[Delivery[DigitSubmitted], bytes]] = []
    older: list[tuple[Delivery[DigitSubmitted], bytes]] = []
    for d in deliveries:
        if d.event.model_input is not None:
            inputs.append((d, d.event.model_input))
        else:
            older.append((d, d.event.image))
    derived, failed = prepare_inputs(older)
    preprocess_ms = (time.perf_counter() - started) * 1000 / max(1, len(deliveries))
    result = score_inputs(model, inputs + derived)
    return BatchResult(result.scored, failed, preprocess_ms, result.inference_ms)


def within_budget(
    deliveries: Sequence[Delivery[DigitSubmitted]], budget: int
) -> list[list[Delivery[DigitSubmitted]]]:
    """Consecutive parts whose images add up to at most `budget` pixels (one larger image is a
    part alone), read from each image's header; an unreadable header counts as nothing (the
    drawing fails its preprocessing anyway)."""
    parts: list[list[Delivery[DigitSubmitted]]] = []
    part: list[Delivery[DigitSubmitted]] = []
    spent = 0
    for delivery in deliveries:
        try:
            _, width, height = peek(delivery.event.image)
            pixels = width * height
        except PreprocessError:
            pixels = 0
        if part and spent + pixels > budget:
            parts.append(part)
            part, spent = [], 0
        part.append(delivery)
        spent += pixels
    if part:
        parts.append(part)
    return parts


@dataclass(frozen=True, slots=True)
class Raised:
    """What a model raised on one drawing (its record)."""

    record: Record
    error: Exception


def _answered(rejected: Rejected, champion: int, unanswered: set[int]) -> Rejected:
    """A candidate's failure, saying the champion answered the drawing unless it did not."""
    if rejected.failed is None or id(rejected.record) in unanswered:
        return rejected
    return replace(rejected, failed=replace(rejected.failed, answered_by=champion))


class ModelFailingError(RuntimeError):
    """The model fails on every drawing of a batch: the model's fault, not the drawings'."""


@dataclass
class BatchHandler:
    """Turns one batch of drawings into `digits.predicted` events.

    The error policy: a drawing the model fails on alone is dead-lettered (its data is the
    problem); a model failing on every drawing is the model's problem, so the batch is not
    committed and is read again after a growing pause, never in a hot loop. Kafka refusing the
    predictions fails the batch the same way (uncommitted), after the producer's own timeouts.
    """

    worker_id: str
    predicted: Publisher
    metrics: WorkerMetrics
    backoff: Backoff = field(default_factory=Backoff)
    pixel_budget: int = PIXEL_BUDGET

    async def __call__(
        self,
        model: LoadedModel,
        deliveries: Sequence[Delivery[DigitSubmitted]],
        release: Release | None = None,
    ) -> list[Rejected]:
        """Score the batch with `model` (and, during a rollout, its candidate); return once
        every prediction is acknowledged by Kafka, with the drawings that could not become a
        model input or that a model failed on.

        Drawings that carry their model input are scored and published first, at once; those
        that must be decoded (version 1 records) follow in parts of at most `pixel_budget`
        pixels, so a burst of huge images delays no other drawing of the batch by more than a
        part, and no part holds a worker thread for long. The caller commits once, after every
        part. The model failing on every drawing of the batch (not of one part) fails it.

        In a canary the candidate answers the drawings the rollout gives it (by digit id); in
        a shadow rollout the champion answers every drawing and the candidate's readings
        follow as `shadow` predictions. A candidate failing never costs an answer: the
        champion answers what it could not read. Every drawing a model fails on is rejected
        naming that version and the rollout (a dead letter the rollout's verdict counts); the
        candidate's say which version answered instead."""
        if release is None:
            rejected, raised = await self._read(model, deliveries, "live", None)
            return await self._judged(model, rejected, raised, len(raised) == len(deliveries))
        rollout = release.rollout
        if rollout.shadow:
            rejected, raised = await self._read(model, deliveries, "live", rollout.rollout_id)
            rejected = await self._judged(model, rejected, raised, len(raised) == len(deliveries))
            unanswered = {id(r.record) for r in rejected}
            return rejected + await self._shadow(release, deliveries, model, unanswered)
        return await self._canary(model, release, deliveries)

    async def _canary(
        self,
        model: LoadedModel,
        release: Release,
        deliveries: Sequence[Delivery[DigitSubmitted]],
    ) -> list[Rejected]:
        """Both shares at once, so neither waits for the other's answers to be acknowledged;
        one failing (Kafka refusing a send) cancels the other, and the batch is read again."""
        rollout = release.rollout
        mine = [d for d in deliveries if rollout.candidate_answers(d.event.digit_id)]
        theirs = [d for d in deliveries if not rollout.candidate_answers(d.event.digit_id)]
        try:
            async with asyncio.TaskGroup() as group:
                champion = group.create_task(self._read(model, theirs, "live", rollout.rollout_id))
                candidate = group.create_task(self._by_candidate(model, release, mine))
        except* Exception as failed:
            raise failed.exceptions[0] from failed
        theirs_rejected, theirs_raised = champion.result()
        mine_rejected, again, again_raised = candidate.result()
        # The champion is broken when it fails on every drawing it read, unless it read only
        # what the candidate failed on while the candidate read the rest: those drawings are
        # the problem, and they are dead-lettered.
        read = len(theirs) + again
        raised = theirs_raised + again_raised
        broken = read > 0 and len(raised) == read and (bool(theirs) or again == len(deliveries))
        return await self._judged(model, theirs_rejected + mine_rejected, raised, broken)

    async def _judged(
        self,
        model: LoadedModel,
        rejected: list[Rejected],
        raised: list[Raised],
        broken: bool,
    ) -> list[Rejected]:
        """A broken champion (it fails on every drawing it read) fails the batch, after a
        pause, to be read again; otherwise the drawings it failed on alone are rejected."""
        if broken:
            delay = await self.backoff.wait()
            error = raised[0].error
            log.error(
                "the model fails on every drawing; the batch will be read again",
                model_version=model.ref.version,
                error=str(error),
                paused_s=delay,
            )
            raise ModelFailingError(f"v{model.ref.version} failed on a whole batch: {error}")
        self.backoff.reset()
        return rejected

    async def _by_candidate(
        self,
        champion: LoadedModel,
        release: Release,
        deliveries: Sequence[Delivery[DigitSubmitted]],
    ) -> tuple[list[Rejected], int, list[Raised]]:
        """The canary's share: the candidate answers; what it fails on, the champion does.
        Returns the rejected drawings (the candidate's failures among them, each saying whether
        the champion answered it), how many the champion read, and what it raised on."""
        rollout_id = release.rollout.rollout_id
        rejected, raised = await self._read(release.candidate, deliveries, "live", rollout_id)
        if not raised:
            return rejected, 0, []
        self._candidate_failed(release, raised)
        failed = {id(r.record) for r in raised}
        again = [d for d in deliveries if id(d.record) in failed]
        theirs, champion_raised = await self._read(champion, again, "live", rollout_id)
        unanswered = {id(r.record) for r in theirs}
        answered = [_answered(r, champion.ref.version, unanswered) for r in rejected]
        return answered + theirs, len(again), champion_raised

    async def _shadow(
        self,
        release: Release,
        deliveries: Sequence[Delivery[DigitSubmitted]],
        champion: LoadedModel,
        unanswered: set[int],
    ) -> list[Rejected]:
        """The candidate reads every drawing too; its readings are never the answer. Returns
        the drawings it failed on (those it could not decode the champion could not either:
        they are rejected once, as the champion's)."""
        rejected, raised = await self._read(
            release.candidate, deliveries, "shadow", release.rollout.rollout_id
        )
        if not raised:
            return []
        self._candidate_failed(release, raised)
        version = champion.ref.version
        return [_answered(r, version, unanswered) for r in rejected if r.failed is not None]

    def _candidate_failed(self, release: Release, raised: list[Raised]) -> None:
        version = str(release.candidate.ref.version)
        self.metrics.candidate_failures.labels(model_version=version).inc(len(raised))
        log.error(
            "the rollout's candidate failed on drawings; the champion answers them",
            model_version=release.candidate.ref.version,
            mode=release.rollout.started.mode,
            count=len(raised),
            error=str(raised[0].error),
        )

    async def _read(
        self,
        model: LoadedModel,
        deliveries: Sequence[Delivery[DigitSubmitted]],
        kind: PredictionKind,
        rollout_id: uuid.UUID | None,
    ) -> tuple[list[Rejected], list[Raised]]:
        """Score and publish the batch in parts; the drawings that could not be read, and what
        the model raised on, drawing by drawing."""
        ready = [d for d in deliveries if d.event.model_input is not None]
        older = [d for d in deliveries if d.event.model_input is None]
        rejected: list[Rejected] = []
        raised: list[Raised] = []
        for part in (ready, *within_budget(older, self.pixel_budget)):
            if part:
                rejected += await self._predict(model, part, raised, kind, rollout_id)
        return rejected, raised

    async def _predict(
        self,
        model: LoadedModel,
        deliveries: Sequence[Delivery[DigitSubmitted]],
        raised: list[Raised],
        kind: PredictionKind = "live",
        rollout_id: uuid.UUID | None = None,
    ) -> list[Rejected]:
        """Score and publish one part; what the model raised on, drawing by drawing, is added
        to `raised`, and those drawings are rejected naming the version."""
        started = utc_now()
        result = await self._score(model, deliveries, raised)
        predictions = [
            self._prediction(
                model, s.item.event, s.probabilities, started, result, kind, rollout_id
            )
            for s in result.scored
        ]
        traces = [s.item.trace for s in result.scored]
        if tracing.enabled() and kind != "shadow":  # the span tells the answer, not a shadow's
            for prediction, context in zip(predictions, traces, strict=True):
                _annotate(context, prediction)
        await asyncio.gather(
            *(
                self.predicted.publish(
                    p.to_bytes(),
                    key=str(p.digit_id).encode(),
                    headers=tracing.headers(t) if t is not None else None,
                )
                for p, t in zip(predictions, traces, strict=True)
            )
        )
        self._observe(model, predictions, result.inference_ms, kind)
        if predictions:
            log.info(
                "batch predicted",
                model_version=model.ref.version,
                kind=kind,
                count=len(predictions),
                inference_ms=round(result.inference_ms, 3),
                digit_ids=[str(p.digit_id) for p in predictions],
                **({"trace_ids": _trace_ids(traces)} if tracing.enabled() else {}),
            )
        by_model = {id(r.record) for r in raised}
        failure = Failure(model.ref.version, rollout_id)
        return [
            Rejected(f.item.record, f.error, failure if id(f.item.record) in by_model else None)
            for f in result.failed
        ]

    async def _score(
        self,
        model: LoadedModel,
        deliveries: Sequence[Delivery[DigitSubmitted]],
        raised: list[Raised],
    ) -> BatchResult[Delivery[DigitSubmitted]]:
        # CPU work off the event loop: the loop keeps polling Kafka and answering probes.
        try:
            return await asyncio.to_thread(score_drawings, model, deliveries)
        except Exception:  # onnxruntime raises untyped errors
            return await self._one_by_one(model, deliveries, raised)

    async def _one_by_one(
        self,
        model: LoadedModel,
        deliveries: Sequence[Delivery[DigitSubmitted]],
        raised: list[Raised],
    ) -> BatchResult[Delivery[DigitSubmitted]]:
        """The part failed: score each drawing alone to find the ones the model fails on."""
        scored: list[Scored[Delivery[DigitSubmitted]]] = []
        failed: list[Failed[Delivery[DigitSubmitted]]] = []
        for delivery in deliveries:
            try:
                alone = await asyncio.to_thread(score_drawings, model, [delivery])
            except Exception as exc:  # onnxruntime raises untyped errors
                raised.append(Raised(delivery.record, exc))
                failed.append(Failed(delivery, f"the model failed on this drawing: {exc}"))
                continue
            scored += alone.scored
            failed += alone.failed
        return BatchResult(scored, failed, 0.0, 0.0)

    def _prediction(
        self,
        model: LoadedModel,
        event: DigitSubmitted,
        probabilities: Probabilities,
        started: datetime,
        result: BatchResult[Delivery[DigitSubmitted]],
        kind: PredictionKind,
        rollout_id: uuid.UUID | None,
    ) -> DigitPredicted:
        queue_ms = max(0.0, (started - event.submitted_at).total_seconds() * 1000)
        timings = Timings(
            queue_ms=round(queue_ms, 3),
            preprocess_ms=round(result.preprocess_ms, 3),
            inference_ms=round(result.inference_ms, 3),
            batch_size=len(result.scored),
        )
        return prediction_event(
            digit_id=event.digit_id,
            probabilities=probabilities,
            model=model.ref,
            kind=kind,
            timings=timings,
            worker_id=self.worker_id,
            provider=model.provider,
            submitted_at=event.submitted_at,
            rollout_id=rollout_id,
        )

    def _observe(
        self,
        model: LoadedModel,
        predictions: list[DigitPredicted],
        inference_ms: float,
        kind: PredictionKind,
    ) -> None:
        if not predictions:
            return
        version = str(model.ref.version)
        self.metrics.predictions.labels(model_version=version, kind=kind).inc(len(predictions))
        if kind != "live":
            return  # the batch and latency figures are the answers' own
        self.metrics.batch_size.observe(len(predictions))
        self.metrics.inference_ms.observe(inference_ms)
        now = utc_now()
        for p in predictions:
            if p.submitted_at is not None:
                self.metrics.latency_ms.observe((now - p.submitted_at).total_seconds() * 1000)


def _trace_ids(contexts: list[Context | None]) -> list[str | None]:
    """Each drawing's trace id, for the batch's log line (its own is the batch span's)."""
    return [tracing.trace_id(trace.get_current_span(c)) if c else None for c in contexts]


def _annotate(context: Context | None, prediction: DigitPredicted) -> None:
    """What the drawing's span in its trace should show: which model read it, how, and where
    its time went."""
    if context is None:
        return
    timings = prediction.timings
    trace.get_current_span(context).set_attributes(
        {
            "mnistream.model_version": prediction.model.version,
            "mnistream.kind": prediction.kind,
            "mnistream.digit": prediction.predicted_digit,
            "mnistream.queue_ms": timings.queue_ms,
            "mnistream.preprocess_ms": timings.preprocess_ms,
            "mnistream.inference_ms": timings.inference_ms,
            "mnistream.batch_size": timings.batch_size,
        }
    )
