"""One micro-batch: the model once over 784-byte model inputs (made from images where an event
has none), keeping per-item failures apart."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from mnistream_common.events import DigitPredicted, ModelRef, PredictionKind, Timings
from mnistream_common.preprocessing import PreprocessError, inputs_to_batch, prepare

from mnistream_serving.model import LoadedModel, Probabilities

T = TypeVar("T")


@dataclass(frozen=True)
class Scored(Generic[T]):
    """An item with the model's probabilities for it."""

    item: T
    probabilities: Probabilities


@dataclass(frozen=True)
class Failed(Generic[T]):
    """An item whose image could not become a model input, and why."""

    item: T
    error: str


@dataclass(frozen=True)
class BatchResult(Generic[T]):
    """What one batch produced."""

    scored: list[Scored[T]]
    failed: list[Failed[T]]
    preprocess_ms: float
    inference_ms: float


def prepare_inputs(
    items: Sequence[tuple[T, bytes]],
) -> tuple[list[tuple[T, bytes]], list[Failed[T]]]:
    """The model input of each (item, image bytes), and the items whose image cannot be one."""
    prepared: list[tuple[T, bytes]] = []
    failed: list[Failed[T]] = []
    for item, image in items:
        try:
            prepared.append((item, prepare(image).model_input))
        except PreprocessError as exc:
            failed.append(Failed(item, f"preprocessing failed: {exc}"))
    return prepared, failed


def score_inputs(model: LoadedModel, items: Sequence[tuple[T, bytes]]) -> BatchResult[T]:
    """Score each (item, 784-byte model input) with one session.run; nothing is decoded."""
    started = time.perf_counter()
    batch = inputs_to_batch([model_input for _, model_input in items]) if items else None
    probabilities = model.predict(batch) if batch is not None else np.empty((0, 10), np.float32)
    done = time.perf_counter()
    scored = [Scored(item, p) for (item, _), p in zip(items, probabilities, strict=True)]
    return BatchResult(scored, [], 0.0, (done - started) * 1000)


def prediction_event(
    *,
    digit_id: object,
    probabilities: Probabilities,
    model: ModelRef,
    kind: PredictionKind,
    timings: Timings,
    worker_id: str,
    provider: str,
    **extra: object,
) -> DigitPredicted:
    """The `DigitPredicted` for one scored image."""
    best = int(np.argmax(probabilities))
    return DigitPredicted.model_validate(
        {
            "digit_id": digit_id,
            "model": model,
            "probabilities": [round(float(p), 6) for p in probabilities],
            "predicted_digit": best,
            "confidence": min(1.0, max(0.0, float(probabilities[best]))),
            "kind": kind,
            "timings": timings,
            "worker_id": worker_id,
            "provider": provider,
            **extra,
        }
    )
