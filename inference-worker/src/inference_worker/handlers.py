"""One batch of drawings: preprocess, infer once, publish, and only then commit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from mnistream_common.events import (
    DigitPredicted,
    DigitSubmitted,
    InvalidEventError,
    Timings,
    utc_now,
)
from mnistream_common.kafka import send_to_dead_letter
from mnistream_common.logs import get_logger
from mnistream_serving.batch import BatchResult, prediction_event, score_batch
from mnistream_serving.model import LoadedModel, Probabilities

from inference_worker.metrics import WorkerMetrics

log = get_logger(__name__)
SERVICE = "inference-worker"


class Record(Protocol):
    """The fields of a Kafka consumer record the worker reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class Publisher(Protocol):
    """The part of a FastStream publisher the handler uses."""

    async def publish(self, message: Any, *, key: bytes | None = None) -> Any: ...


@dataclass(frozen=True)
class Submission:
    """A parsed record."""

    record: Record
    event: DigitSubmitted


def parse_records(records: Sequence[Record]) -> tuple[list[Submission], list[tuple[Record, str]]]:
    """Split a batch into valid submissions and poison records (with the reason)."""
    good: list[Submission] = []
    poison: list[tuple[Record, str]] = []
    for record in records:
        try:
            good.append(Submission(record, DigitSubmitted.from_bytes(record.value or b"")))
        except InvalidEventError as exc:
            poison.append((record, str(exc)))
    return good, poison


@dataclass
class BatchHandler:
    """Turns one batch of `digits.submitted` records into `digits.predicted` events."""

    worker_id: str
    predicted: Publisher
    deadletter: Publisher
    metrics: WorkerMetrics

    async def __call__(self, model: LoadedModel, records: Sequence[Record]) -> None:
        """Score the batch with `model`; return once every output is acknowledged by Kafka."""
        started = utc_now()
        submissions, poison = parse_records(records)
        result = score_batch(model, [(s, s.event.image) for s in submissions])
        predictions = [
            self._prediction(model, s.item.event, s.probabilities, started, result)
            for s in result.scored
        ]
        dead = [*poison, *((f.item.record, f.error) for f in result.failed)]
        await asyncio.gather(
            *(
                self.predicted.publish(p.to_bytes(), key=str(p.digit_id).encode())
                for p in predictions
            ),
            *(self._dead_letter(record, error) for record, error in dead),
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

    def _prediction(
        self,
        model: LoadedModel,
        event: DigitSubmitted,
        probabilities: Probabilities,
        started: datetime,
        result: BatchResult[Submission],
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

    async def _dead_letter(self, record: Record, error: str) -> None:
        self.metrics.dead_letters.labels(reason=error.split(":")[0][:40]).inc()
        await send_to_dead_letter(self.deadletter, record, error, SERVICE)

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
