"""One micro-batch: preprocess every image, run the model once, keep per-image failures apart."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from mnistream_common.events import DigitPredicted, ModelRef, PredictionKind, Timings
from mnistream_common.preprocessing import PreprocessError, preprocess, to_batch

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


def score_batch(model: LoadedModel, items: list[tuple[T, bytes]]) -> BatchResult[T]:
    """Preprocess each (item, image bytes) and score all good ones with one session.run."""
    started = time.perf_counter()
    inputs, kept, failed = [], [], []
    for item, image in items:
        try:
            inputs.append(preprocess(image))
            kept.append(item)
        except PreprocessError as exc:
            failed.append(Failed(item, f"preprocessing failed: {exc}"))
    prepared = time.perf_counter()
    probabilities = model.predict(to_batch(inputs)) if inputs else np.empty((0, 10), np.float32)
    done = time.perf_counter()
    scored = [Scored(item, probs) for item, probs in zip(kept, probabilities, strict=True)]
    return BatchResult(
        scored, failed, (prepared - started) * 1000 / max(1, len(items)), (done - prepared) * 1000
    )


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
