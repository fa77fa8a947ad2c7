"""Planning a rescore job: every stored drawing exactly once, chunks spread over partitions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from mnistream_common.events import RescoreTask
from mnistream_common.rescore import JobSpec, job_id_for, plan_chunks, publish_plan, task_key

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


class PagedHistory:
    """Stored ids served a page at a time, as history-service does; counts what it served."""

    def __init__(self, ids: list[uuid.UUID], page: int, extra: list[uuid.UUID] | None = None):
        self.ids, self.page, self.extra = sorted(ids), page, extra or []
        self.pages_served = 0

    async def stored_count(self, until: datetime | None = None) -> int:
        return len(self.ids)

    async def stored_id_pages(
        self, *, until: datetime | None = None
    ) -> AsyncIterator[list[uuid.UUID]]:
        # Drawings stored after the count (`extra`) show up in the pages, as late arrivals do.
        stored = sorted(self.ids + self.extra)
        for start in range(0, len(stored), self.page):
            self.pages_served += 1
            yield stored[start : start + self.page]


class SlowKafka:
    """Acknowledges each send after a pause; records the most sends it had waiting at once."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.sent: list[RescoreTask] = []
        self.waiting = self.most_waiting = 0
        self.fail_at = fail_at

    async def publish(self, task: RescoreTask) -> None:
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        try:
            await asyncio.sleep(0.001 * (task.chunk_index % 3))
            if task.chunk_index == self.fail_at:
                raise ConnectionError("Kafka went away")
            self.sent.append(task)
        finally:
            self.waiting -= 1


JOB = JobSpec(uuid.UUID(int=7), "rescore", MODEL, URI)
NOW = datetime(2026, 12, 1, tzinfo=UTC)


async def test_a_streamed_plan_publishes_every_id_once_with_few_sends_waiting() -> None:
    ids = [uuid.uuid4() for _ in range(1_003)]
    history, kafka = PagedHistory(ids, page=64), SlowKafka()

    planned = await publish_plan(history, kafka.publish, JOB, 10, NOW, in_flight=4)

    assert planned == 1_003
    tasks = sorted(kafka.sent, key=lambda t: t.chunk_index)
    assert [d for t in tasks for d in t.digit_ids] == sorted(ids)
    assert [t.chunk_index for t in tasks] == list(range(101))
    assert {(t.chunk_count, t.job_total, t.job_id) for t in tasks} == {(101, 1_003, JOB.job_id)}
    assert 1 < kafka.most_waiting <= 4
    assert history.pages_served == 16  # read a page at a time, never all at once


async def test_planning_again_publishes_the_same_chunks() -> None:
    ids = [uuid.uuid4() for _ in range(95)]
    first, second = SlowKafka(), SlowKafka()

    await publish_plan(PagedHistory(ids, page=30), first.publish, JOB, 20, NOW)
    await publish_plan(PagedHistory(ids, page=7), second.publish, JOB, 20, NOW)

    def chunks(kafka: SlowKafka) -> list[tuple[bytes, list[uuid.UUID]]]:
        return sorted((task_key(t), t.digit_ids) for t in kafka.sent)

    assert chunks(first) == chunks(second)


async def test_drawings_stored_after_the_count_are_left_to_the_next_plan() -> None:
    counted = [uuid.UUID(int=n) for n in range(1, 50)]
    late = [uuid.UUID(int=n) for n in range(1000, 1010)]
    kafka = SlowKafka()

    planned = await publish_plan(PagedHistory(counted, 8, extra=late), kafka.publish, JOB, 10, NOW)

    assert planned == 49
    assert sum(len(t.digit_ids) for t in kafka.sent) == 49
    assert max(t.chunk_index for t in kafka.sent) == 4 == kafka.sent[0].chunk_count - 1


async def test_a_failed_send_fails_the_plan() -> None:
    ids = [uuid.uuid4() for _ in range(200)]

    with pytest.raises(ConnectionError, match="went away"):
        await publish_plan(PagedHistory(ids, 50), SlowKafka(fail_at=3).publish, JOB, 10, NOW)


async def test_nothing_stored_publishes_nothing() -> None:
    kafka = SlowKafka()

    assert await publish_plan(PagedHistory([], 10), kafka.publish, JOB, 10, NOW) == 0
    assert kafka.sent == []
