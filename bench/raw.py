"""Measurement 1, the limit: the champion's raw onnxruntime throughput, and what each other
per-drawing step of a worker costs on its own (one core)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
from mnistream_common.events import DigitSubmitted, ModelRef, Timings
from mnistream_common.preprocessing import decode, preprocess, to_batch
from mnistream_serving.batch import prediction_event
from mnistream_serving.model import LoadedModel, RuntimeOptions, build_model

from bench.inputs import Drawings
from bench.models import BenchModel
from bench.stats import spread


def _rate(work: Callable[[], int], seconds: float) -> float:
    """Items per second of `work` (which returns how many items it did), run for `seconds`."""
    work()  # warm
    done = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        done += work()
    return done / elapsed


def _session(model: BenchModel, onnx: bytes, threads: int) -> LoadedModel:
    ref = ModelRef(name="mnist-digits", version=model.version, sha256=model.sha256)
    # The workers' own session options (sequential, inter-op 1), CPU only.
    return build_model(ref, onnx, RuntimeOptions(threads, prefer_gpu=False))


def measure_raw(
    model: BenchModel, onnx: bytes, drawings: Drawings, repeats: int, seconds: float
) -> dict[str, Any]:
    """images/s of session.run at batch 1 and 64, one intra-op thread and all cores.

    The configurations take turns within each repeat, so a burst of other load on the machine
    spreads over all of them instead of sinking one.
    """
    inputs = to_batch([preprocess(png) for png in drawings.pngs])
    batches = {1: inputs[:1], 64: np.resize(inputs, (64, 1, 28, 28)).astype(np.float32)}
    cores = os.cpu_count() or 1
    sessions = {"1_thread": _session(model, onnx, 1), "all_cores": _session(model, onnx, cores)}
    rates: dict[str, list[float]] = {}
    for _ in range(repeats):
        for label, loaded in sessions.items():
            for size, batch in batches.items():

                def run(batch: np.ndarray[Any, Any] = batch, loaded: LoadedModel = loaded) -> int:
                    loaded.predict(batch)
                    return len(batch)

                rates.setdefault(f"batch{size}_{label}", []).append(_rate(run, seconds))
    for key, values in rates.items():
        print(f"raw onnxruntime {key}: {values} images/s", flush=True)
    return {"cores": cores, **{key: spread(values) for key, values in rates.items()}}


def measure_steps(drawings: Drawings, repeats: int, seconds: float) -> dict[str, Any]:
    """What a worker does per drawing besides session.run, each step alone on one core."""
    events = [drawings.submitted(i).to_bytes() for i in range(len(drawings.pngs))]
    ref = ModelRef(name="mnist-digits", version=1, sha256="0" * 64)
    probabilities = np.full(10, 0.1, dtype=np.float32)
    timings = Timings(queue_ms=1.0, preprocess_ms=1.0, inference_ms=1.0, batch_size=64)

    def parse() -> int:
        for raw in events:
            DigitSubmitted.from_bytes(raw)
        return len(events)

    def decode_only() -> int:
        for png in drawings.pngs:
            decode(png)
        return len(drawings.pngs)

    def prep() -> int:
        for png in drawings.pngs:
            preprocess(png)
        return len(drawings.pngs)

    def publishable() -> int:
        for _ in range(200):
            prediction_event(
                digit_id=uuid.uuid4(),
                probabilities=probabilities,
                model=ref,
                kind="live",
                timings=timings,
                worker_id="bench",
                provider="CPUExecutionProvider",
            ).to_bytes()
        return 200

    steps = {
        "parse_submitted_event": parse,
        "decode_png": decode_only,
        "decode_and_preprocess": prep,
        "build_and_encode_prediction": publishable,
    }
    return {
        name: spread([_rate(step, seconds) for _ in range(repeats)]) for name, step in steps.items()
    }
