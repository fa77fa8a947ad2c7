"""What history-service's writer spends per drawing as versions accumulate: the kept figures
are adjusted by every write, and their cost must grow with the versions of a drawing, not with
their square (as flips kept for every pair of versions did: 1.6 ms per drawing at 13 versions,
20 times the cost at 2).

In a database of its own on the bench PostgreSQL (`bench.scale.upkeep_run` makes it): DRAWINGS
drawings, then VERSIONS versions one after another, each promoted over the one before and then
read for every drawing (rescore predictions, the writer's batches of BATCH) through
`HistoryWriter.predictions`, timed.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from history_service.writer import HistoryWriter
from mnistream_common.events import DigitPredicted, ModelPromoted, ModelRef, Timings
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

DRAWINGS = 2_000
VERSIONS = 13
BATCH = 500


def _predicted(digit_id: uuid.UUID, model: ModelRef, digit: int) -> DigitPredicted:
    probabilities = [0.01] * 10
    probabilities[digit] = 0.91
    return DigitPredicted(
        digit_id=digit_id,
        model=model,
        probabilities=probabilities,
        predicted_digit=digit,
        confidence=0.91,
        kind="rescore",
        timings=Timings(queue_ms=0, preprocess_ms=0, inference_ms=0, batch_size=BATCH),
        worker_id="bench-upkeep",
        provider="CPUExecutionProvider",
    )


def _promoted(model: ModelRef, previous: int | None) -> ModelPromoted:
    return ModelPromoted(
        model=model,
        previous_version=previous,
        onnx_uri=f"s3://mlflow/bench/v{model.version}.onnx",
        architecture="cnn",
        metrics={},
        promoted_by="bench",
        reason="upkeep",
        promoted_at=datetime.now(UTC),
    )


async def upkeep(url: str) -> dict[str, Any]:
    """ms per drawing of each version's writes into the migrated database at `url`, and the
    flip rows kept at the end."""
    engine = create_async_engine(url)
    try:
        writer = HistoryWriter(engine, None, "bench")  # type: ignore[arg-type]  # no images
        ids = [uuid.UUID(int=n + 1) for n in range(DRAWINGS)]
        per_version: list[float] = []
        for version in range(1, VERSIONS + 1):
            model = ModelRef(name="mnist-digits", version=version, sha256="ab" * 32)
            started = time.perf_counter()
            await writer.promotions([_promoted(model, version - 1 if version > 1 else None)])
            for i in range(0, DRAWINGS, BATCH):
                batch = ids[i : i + BATCH]
                # Two consecutive versions disagree on four drawings in five.
                await writer.predictions(
                    [_predicted(d, model, d.int * (2 * version + 1) % 10) for d in batch]
                )
            per_version.append(round((time.perf_counter() - started) * 1000 / DRAWINGS, 3))
        async with engine.connect() as connection:
            flips = (
                await connection.execute(text("SELECT count(*) FROM prediction_flips"))
            ).scalar()
    finally:
        await engine.dispose()
    return {
        "drawings": DRAWINGS,
        "batch": BATCH,
        "ms_per_drawing": per_version,
        "ratio_last_to_second": round(per_version[-1] / per_version[1], 2),
        "flip_rows": flips,
    }
