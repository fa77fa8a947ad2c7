"""One batch of drawings: preprocess, infer once, publish; the caller commits after."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from mnistream_common.consume import Backoff, Delivery, Rejected
from mnistream_common.events import DigitPredicted, DigitSubmitted, Timings, utc_now
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

from inference_worker.metrics import WorkerMetrics

log = get_logger(__name__)
SERVICE = "inference-worker"
# Pixels of version 1 drawings decoded in one go: two images of the largest accepted size
# (2048 × 2048), about 0.2 s of one core.
PIXEL_BUDGET = 2 * 2048 * 2048


class Publisher(Protocol):
    """The part of a FastStream publisher the handler uses."""

    async def publish(self, message: Any, *, key: bytes | None = None) -> Any: ...


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
        self, model: LoadedModel, deliveries: Sequence[Delivery[DigitSubmitted]]
    ) -> list[Rejected]:
        """Score the batch with `model`; return once every prediction is acknowledged by Kafka,
        with the drawings that could not become a model input.

        Drawings that carry their model input are scored and published first, at once; those
        that must be decoded (version 1 records) follow in parts of at most `pixel_budget`
        pixels, so a burst of huge images delays no other drawing of the batch by more than a
        part, and no part holds a worker thread for long. The caller commits once, after every
        part. The model failing on every drawing of the batch (not of one part) fails it."""
        ready = [d for d in deliveries if d.event.model_input is not None]
        older = [d for d in deliveries if d.event.model_input is None]
        rejected: list[Rejected] = []
        raised: list[Exception] = []
        for part in (ready, *within_budget(older, self.pixel_budget)):
            if part:
                rejected += await self._predict(model, part, raised)
        if deliveries and len(raised) == len(deliveries):
            delay = await self.backoff.wait()
            log.error(
                "the model fails on every drawing; the batch will be read again",
                model_version=model.ref.version,
                error=str(raised[0]),
                paused_s=delay,
            )
            raise ModelFailingError(f"v{model.ref.version} failed on a whole batch: {raised[0]}")
        self.backoff.reset()
        return rejected

    async def _predict(
        self,
        model: LoadedModel,
        deliveries: Sequence[Delivery[DigitSubmitted]],
        raised: list[Exception],
    ) -> list[Rejected]:
        """Score and publish one part; what the model raised on, drawing by drawing, is added
        to `raised`."""
        started = utc_now()
        result = await self._score(model, deliveries, raised)
        predictions = [
            self._prediction(model, s.item.event, s.probabilities, started, result)
            for s in result.scored
        ]
        await asyncio.gather(
            *(
                self.predicted.publish(p.to_bytes(), key=str(p.digit_id).encode())
                for p in predictions
            )
        )
        self._observe(model, predictions, result.inference_ms)
        if predictions:
            log.info(
                "batch predicted",
                model_version=model.ref.version,
                count=len(predictions),
                inference_ms=round(result.inference_ms, 3),
                digit_ids=[str(p.digit_id) for p in predictions],
            )
        return [Rejected(f.item.record, f.error) for f in result.failed]

    async def _score(
        self,
        model: LoadedModel,
        deliveries: Sequence[Delivery[DigitSubmitted]],
        raised: list[Exception],
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
        raised: list[Exception],
    ) -> BatchResult[Delivery[DigitSubmitted]]:
        """The part failed: score each drawing alone to find the ones the model fails on."""
        scored: list[Scored[Delivery[DigitSubmitted]]] = []
        failed: list[Failed[Delivery[DigitSubmitted]]] = []
        for delivery in deliveries:
            try:
                alone = await asyncio.to_thread(score_drawings, model, [delivery])
            except Exception as exc:  # onnxruntime raises untyped errors
                raised.append(exc)
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
            kind="live",
            timings=timings,
            worker_id=self.worker_id,
            provider=model.provider,
            submitted_at=event.submitted_at,
        )

    def _observe(
        self, model: LoadedModel, predictions: list[DigitPredicted], inference_ms: float
    ) -> None:
        if not predictions:
            return
        version = str(model.ref.version)
        self.metrics.predictions.labels(model_version=version, kind="live").inc(len(predictions))
        self.metrics.batch_size.observe(len(predictions))
        self.metrics.inference_ms.observe(inference_ms)
        now = utc_now()
        for p in predictions:
            if p.submitted_at is not None:
                self.metrics.latency_ms.observe((now - p.submitted_at).total_seconds() * 1000)
