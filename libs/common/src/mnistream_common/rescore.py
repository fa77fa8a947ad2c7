"""Splitting a rescore or evaluation job into `rescore.tasks` chunks (planner and CLI)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Literal

from mnistream_common.events import ModelPromoted, ModelRef, RescoreTask

# Job ids derive from the promotion's event id, so a redelivered promotion plans the same job.
JOB_NAMESPACE = uuid.UUID("5b1d7c1e-6f0a-4a43-9d56-2f1f4f7f3c11")


def job_id_for(promotion: ModelPromoted) -> uuid.UUID:
    """The job that rescores the history for one promotion."""
    return job_id_of_promotion(promotion.event_id)


def job_id_of_promotion(event_id: uuid.UUID) -> uuid.UUID:
    """The rescore job of the promotion with this event id."""
    return uuid.uuid5(JOB_NAMESPACE, str(event_id))


def plan_chunks(
    job_id: uuid.UUID,
    kind: Literal["rescore", "candidate"],
    model: ModelRef,
    onnx_uri: str,
    digit_ids: Sequence[uuid.UUID],
    chunk_size: int,
) -> list[RescoreTask]:
    """Every stored drawing exactly once, in chunks of at most `chunk_size`."""
    chunks = [digit_ids[i : i + chunk_size] for i in range(0, len(digit_ids), chunk_size)]
    return [
        RescoreTask(
            job_id=job_id,
            kind=kind,
            model=model,
            onnx_uri=onnx_uri,
            chunk_index=index,
            chunk_count=len(chunks),
            job_total=len(digit_ids),
            digit_ids=list(chunk),
        )
        for index, chunk in enumerate(chunks)
    ]


def task_key(task: RescoreTask) -> bytes:
    """Kafka key of a task: job id and chunk index, so one job's chunks spread over partitions.

    Keying by the job id alone would put a whole job on one partition, and so on one worker.
    """
    return f"{task.job_id}:{task.chunk_index}".encode()
