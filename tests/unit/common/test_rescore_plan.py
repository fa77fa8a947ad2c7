"""Planning a rescore job: every stored drawing exactly once, chunks spread over partitions."""

from __future__ import annotations

import uuid

import pytest
from mnistream_common.events import RescoreTask
from mnistream_common.rescore import job_id_for, plan_chunks, task_key

from tests.helpers import model_ref, promotion, tiny_onnx_model

ONNX = tiny_onnx_model(5)
MODEL = model_ref(ONNX, 5)
URI = "s3://mlflow/models/v5.onnx"


def plan(count: int, chunk_size: int) -> tuple[list[uuid.UUID], list[RescoreTask]]:
    ids = [uuid.uuid4() for _ in range(count)]
    job_id = uuid.uuid4()
    return ids, plan_chunks(job_id, "rescore", MODEL, URI, ids, chunk_size)


@pytest.mark.parametrize(
    ("count", "chunk_size", "sizes"),
    [
        (10, 3, [3, 3, 3, 1]),
        (9, 3, [3, 3, 3]),
        (1, 500, [1]),
        (1000, 256, [256, 256, 256, 232]),
        (5, 1, [1, 1, 1, 1, 1]),
    ],
)
def test_every_id_exactly_once_in_chunks_of_at_most_chunk_size(
    count: int, chunk_size: int, sizes: list[int]
) -> None:
    ids, tasks = plan(count, chunk_size)

    assert [len(t.digit_ids) for t in tasks] == sizes
    planned = [d for t in tasks for d in t.digit_ids]
    assert planned == ids
    assert len(set(planned)) == count


def test_every_chunk_carries_the_job_and_its_totals() -> None:
    _, tasks = plan(10, 4)

    assert [t.chunk_index for t in tasks] == [0, 1, 2]
    for task in tasks:
        assert task.chunk_count == 3
        assert task.job_total == 10
        assert task.job_id == tasks[0].job_id
        assert (task.kind, task.model, task.onnx_uri) == ("rescore", MODEL, URI)
        assert RescoreTask.from_bytes(task.to_bytes()) == task


def test_no_stored_drawings_means_no_chunks() -> None:
    _, tasks = plan(0, 100)

    assert tasks == []


def test_a_candidate_evaluation_is_planned_the_same_way() -> None:
    ids = [uuid.uuid4() for _ in range(3)]

    tasks = plan_chunks(uuid.uuid4(), "candidate", MODEL, URI, ids, 2)

    assert {t.kind for t in tasks} == {"candidate"}
    assert [d for t in tasks for d in t.digit_ids] == ids


def test_task_keys_differ_per_chunk_so_a_job_spreads_over_partitions() -> None:
    _, tasks = plan(100, 10)

    keys = [task_key(t) for t in tasks]

    assert len(set(keys)) == len(tasks)
    assert keys[3] == f"{tasks[3].job_id}:3".encode()


def test_task_keys_are_stable_for_a_redelivered_chunk() -> None:
    _, tasks = plan(10, 5)

    again = RescoreTask.from_bytes(tasks[1].to_bytes())

    assert task_key(again) == task_key(tasks[1])


def test_a_redelivered_promotion_plans_the_same_job() -> None:
    event = promotion(ONNX, 5)
    redelivered = type(event).from_bytes(event.to_bytes())

    assert job_id_for(redelivered) == job_id_for(event)
    assert job_id_for(promotion(ONNX, 5)) != job_id_for(event)
