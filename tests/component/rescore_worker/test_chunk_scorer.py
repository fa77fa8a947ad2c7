"""Rescoring: every drawing of a chunk gets exactly one prediction from the job's model; chunks
of a superseded job are skipped; drawings without an image are skipped and reported; the
planner splits all stored drawings into chunks once per promotion."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, MutableMapping
from typing import Any, Literal

import pytest
import structlog
from mnistream_common.events import DigitPredicted, ModelPromoted, RescoreSkipped, RescoreTask
from mnistream_common.history_client import HistoryClient, HistoryUnavailableError
from mnistream_common.rescore import job_id_for, plan_chunks, task_key
from mnistream_serving.loader import ModelCache
from mnistream_serving.model import ModelRejectedError, RuntimeOptions
from mnistream_serving.registry import RegistryCheck
from rescore_worker.handlers import ChunkScorer, Planner
from rescore_worker.ledger import Ledger

from tests.helpers import (
    FOUR,
    SEVEN,
    FakeHistory,
    FakeObjectStore,
    FakePublisher,
    FakeRegistry,
    drawing_png,
    encode_ink,
    promotion,
    stroke_ink,
    tiny_onnx_model,
)

BUCKET = "drawings"
WORKER = "rescore-under-test"
ONNX = {version: tiny_onnx_model(200 + version) for version in (1, 2)}


class Rescore:
    """A chunk scorer over an in-memory store, with the promotions it has read."""

    def __init__(self) -> None:
        self.store = FakeObjectStore()
        self.history = FakeHistory()
        self.ledger = Ledger()
        self.predicted = FakePublisher()
        self.skipped = FakePublisher()
        self.promotions: list[ModelPromoted] = []
        self.registry = FakeRegistry()
        for version, onnx_bytes in ONNX.items():
            self.store.add(f"s3://mlflow/models/v{version}.onnx", onnx_bytes)
            self.registry.add(onnx_bytes, version)
        options = RuntimeOptions(intra_op_threads=1, prefer_gpu=False, warmup_batch=4)
        registry = RegistryCheck("http://mlflow.test", self.registry.transport())
        self.scorer = ChunkScorer(
            ModelCache(self.store.as_store(), options, "mlflow", registry),
            self.history.client(),
            self.predicted,
            self.skipped,
            self.ledger,
            WORKER,
        )

    def promote(self, version: int) -> ModelPromoted:
        event = promotion(ONNX[version], version)
        self.ledger.record(event, len(self.promotions))
        self.promotions.append(event)
        return event

    def drawings(self, count: int) -> list[uuid.UUID]:
        ids = [uuid.uuid4() for _ in range(count)]
        images = [drawing_png(SEVEN), drawing_png(FOUR), encode_ink(stroke_ink(), "jpeg")]
        for index, digit_id in enumerate(ids):
            self.history.store(digit_id, images[index % len(images)])
        return ids

    def predictions(self) -> list[DigitPredicted]:
        return [DigitPredicted.from_bytes(body) for body in self.predicted.bodies]


def chunks(
    event: ModelPromoted,
    ids: list[uuid.UUID],
    size: int,
    kind: Literal["rescore", "candidate"] = "rescore",
) -> list[RescoreTask]:
    return plan_chunks(job_id_for(event), kind, event.model, event.onnx_uri, ids, size)


@pytest.fixture
def rescore() -> Rescore:
    return Rescore()


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


async def test_every_drawing_of_a_job_gets_one_rescore_prediction(rescore: Rescore) -> None:
    event = rescore.promote(1)
    ids = rescore.drawings(10)

    counts = [await rescore.scorer(task) for task in chunks(event, ids, 4)]

    made = rescore.predictions()
    assert counts == [4, 4, 2]
    assert rescore.history.input_requests == 3, "one request for the inputs of a chunk"
    assert sorted(p.digit_id for p in made) == sorted(ids)
    assert [p.key for p in rescore.predicted.sent] == [str(p.digit_id).encode() for p in made]
    for prediction in made:
        assert prediction.kind == "rescore"
        assert prediction.job_id == job_id_for(event)
        assert prediction.job_total == 10
        assert prediction.model == event.model
        assert prediction.worker_id == WORKER
        assert len(prediction.probabilities) == 10
        assert sum(prediction.probabilities) == pytest.approx(1.0, abs=1e-4)


async def test_a_candidate_evaluation_predicts_with_kind_candidate(rescore: Rescore) -> None:
    rescore.promote(1)
    candidate = promotion(ONNX[2], 2)
    ids = rescore.drawings(3)

    [task] = chunks(candidate, ids, 10, kind="candidate")
    count = await rescore.scorer(task)

    assert count == 3
    assert {(p.kind, p.model.version) for p in rescore.predictions()} == {("candidate", 2)}


async def test_chunks_of_a_superseded_job_are_skipped(rescore: Rescore) -> None:
    old = rescore.promote(1)
    ids = rescore.drawings(6)
    first, second = chunks(old, ids, 3)
    assert await rescore.scorer(first) == 3

    new = rescore.promote(2)
    skipped = await rescore.scorer(second)
    [current] = chunks(new, ids, 6)
    rescored = await rescore.scorer(current)

    assert skipped == 0
    assert rescored == 6
    versions = [p.model.version for p in rescore.predictions()]
    assert versions == [1] * 3 + [2] * 6


async def test_a_candidate_evaluation_is_never_superseded(rescore: Rescore) -> None:
    old = rescore.promote(1)
    rescore.promote(2)
    ids = rescore.drawings(2)

    [task] = chunks(old, ids, 2, kind="candidate")

    assert await rescore.scorer(task) == 2


async def test_drawings_that_are_not_stored_are_skipped_and_reported(
    rescore: Rescore, logs: list[MutableMapping[str, Any]]
) -> None:
    event = rescore.promote(1)
    stored = rescore.drawings(4)
    lost = [uuid.uuid4(), uuid.uuid4()]

    [task] = chunks(event, [*stored[:2], lost[0], *stored[2:], lost[1]], 10)
    count = await rescore.scorer(task)

    assert count == 4
    assert sorted(p.digit_id for p in rescore.predictions()) == sorted(stored)
    [report] = [entry for entry in logs if entry["log_level"] == "error"]
    assert report["event"] == "drawings of the chunk are not stored; skipped"
    assert report["count"] == 2
    assert sorted(report["digit_ids"]) == sorted(str(d) for d in lost)
    # ... and published, so that the job counts them as done and finishes.
    [skipped] = [RescoreSkipped.from_bytes(body) for body in rescore.skipped.bodies]
    assert (skipped.job_id, skipped.job_total, skipped.kind) == (task.job_id, 6, "rescore")
    assert sorted((s.digit_id, s.reason) for s in skipped.skipped) == sorted(
        (d, "not stored") for d in lost
    )
    assert [p.key for p in rescore.skipped.sent] == [str(task.job_id).encode()]


async def test_a_chunk_with_nothing_skipped_publishes_no_skipped_record(rescore: Rescore) -> None:
    [task] = chunks(rescore.promote(1), rescore.drawings(3), 10)

    assert await rescore.scorer(task) == 3
    assert rescore.skipped.sent == []


async def test_a_stored_image_that_cannot_be_read_is_skipped_and_reported(
    rescore: Rescore, logs: list[MutableMapping[str, Any]]
) -> None:
    event = rescore.promote(1)
    ids = rescore.drawings(2)
    broken = uuid.uuid4()
    rescore.history.store(broken, b"\x89PNG\r\n\x1a\n cut short")

    [task] = chunks(event, [*ids, broken], 10)
    count = await rescore.scorer(task)

    assert count == 2
    [warning] = [entry for entry in logs if entry.get("digit_id") == str(broken)]
    assert warning["event"] == "stored drawing cannot be read by a model; skipped"
    [skipped] = [RescoreSkipped.from_bytes(body) for body in rescore.skipped.bodies]
    [item] = skipped.skipped
    assert item.digit_id == broken and item.reason == warning["error"]


async def test_history_being_down_fails_the_chunk_so_it_is_redone(rescore: Rescore) -> None:
    event = rescore.promote(1)
    ids = rescore.drawings(3)
    [task] = chunks(event, ids, 3)
    rescore.history.down = True

    with pytest.raises(HistoryUnavailableError, match="unreachable"):
        await rescore.scorer(task)

    assert rescore.predicted.sent == []


async def test_a_model_that_does_not_match_its_sha256_is_refused(rescore: Rescore) -> None:
    event = rescore.promote(1)
    rescore.store.add(event.onnx_uri, ONNX[2])  # the object was replaced under the same URI
    [task] = chunks(event, rescore.drawings(1), 1)

    with pytest.raises(ModelRejectedError, match="sha256 mismatch"):
        await rescore.scorer(task)

    assert rescore.predicted.sent == []


# --- the planner ----------------------------------------------------------------------------


def history_with(ids: list[uuid.UUID]) -> HistoryClient:
    """history-service's internal id listing (paged by `after`) and count."""
    return FakeHistory(dict.fromkeys(ids, b"")).client()


async def test_the_planner_lists_the_drawings_only_once_history_has_caught_up() -> None:
    """Drawings submitted before the promotion but stored only while the planner waits for
    history-service to catch up are in the plan: without the wait they were left out (read live
    by the old champion, never by the new one)."""
    stored = [uuid.uuid4() for _ in range(5)]
    late = [uuid.uuid4() for _ in range(3)]
    fake = FakeHistory(dict.fromkeys(stored, b""))
    tasks = FakePublisher()

    async def ledger_end() -> int:
        return 1

    async def caught_up() -> None:
        for digit_id in late:  # history stores the drawings it was still behind on
            fake.images[digit_id] = b""

    async with fake.client() as history:
        await Planner(history, tasks, ledger_end, 10, history_caught_up=caught_up)(
            promotion(ONNX[1], 1), 0
        )

    published = [RescoreTask.from_bytes(body) for body in tasks.bodies]
    assert sorted(d for t in published for d in t.digit_ids) == sorted(stored + late)


async def test_the_planner_puts_every_stored_drawing_in_exactly_one_chunk() -> None:
    ids = [uuid.uuid4() for _ in range(25)]
    tasks = FakePublisher()
    event = promotion(ONNX[1], 1)

    async def ledger_end() -> int:
        return 1

    async with history_with(ids) as history:
        planned = await Planner(history, tasks, ledger_end, chunk_size=10)(event, 0)

    published = [RescoreTask.from_bytes(body) for body in tasks.bodies]
    assert planned == 3
    assert sorted(d for t in published for d in t.digit_ids) == sorted(ids)
    assert {(t.job_id, t.job_total, t.chunk_count) for t in published} == {
        (job_id_for(event), 25, 3)
    }
    assert [p.key for p in tasks.sent] == [task_key(t) for t in published]


async def test_the_planner_skips_a_promotion_that_is_already_superseded() -> None:
    tasks = FakePublisher()

    async def ledger_end() -> int:
        return 3

    async with history_with([uuid.uuid4()]) as history:
        planned = await Planner(history, tasks, ledger_end, chunk_size=10)(promotion(ONNX[1], 1), 0)

    assert planned == 0
    assert tasks.sent == []


async def test_the_planner_plans_no_job_for_a_model_that_cannot_be_used() -> None:
    """A promotion of a model that is not stored (a forged one): no chunk is published, where
    every chunk of its job would only have been dead-lettered; a usable one is planned."""
    rescore = Rescore()
    tasks = FakePublisher()
    unstored = promotion(tiny_onnx_model(999), 7)

    async def ledger_end() -> int:
        return 1

    async with history_with([uuid.uuid4() for _ in range(25)]) as history:
        planner = Planner(history, tasks, ledger_end, 10, rescore.scorer.models)
        assert await planner(unstored, 0) == 0
        assert tasks.sent == []
        assert await planner(promotion(ONNX[1], 1), 0) == 3


async def test_the_planner_still_plans_while_object_storage_is_down() -> None:
    """Storage being down says nothing about the model: the job is planned as before (its
    chunks wait for storage), rather than the promotion being redelivered in a loop."""
    rescore = Rescore()
    tasks = FakePublisher()
    rescore.store.down = True

    async def ledger_end() -> int:
        return 1

    async with history_with([uuid.uuid4() for _ in range(25)]) as history:
        planner = Planner(history, tasks, ledger_end, 10, rescore.scorer.models)
        assert await planner(promotion(ONNX[2], 2), 0) == 3
