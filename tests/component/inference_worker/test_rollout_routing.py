"""During a rollout the worker's batch handler routes each drawing: in a canary the candidate
answers its share (the same drawing always to the same version), in a shadow rollout both read
every drawing and only the champion answers; a failing candidate never costs an answer."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from inference_worker.handlers import SERVICE, BatchHandler, ModelFailingError
from inference_worker.keeper import Release
from inference_worker.metrics import WorkerMetrics
from mnistream_common.consume import DeadLetterRejects, Delivery, Rejected, typed_batch
from mnistream_common.events import (
    DeadLetter,
    DigitPredicted,
    DigitSubmitted,
    ModelRollout,
    RolloutMode,
)
from mnistream_common.ledger import fold
from mnistream_serving.model import LoadedModel, RuntimeOptions, build_model

from tests.helpers import (
    FakePublisher,
    deliver,
    model_ref,
    promotion,
    records,
    submitted,
    tiny_onnx_model,
)

CHAMPION_ONNX, CANDIDATE_ONNX = tiny_onnx_model(31), tiny_onnx_model(32)
OPTIONS = RuntimeOptions(1, False, 4)


@pytest.fixture(scope="module")
def champion() -> LoadedModel:
    return build_model(model_ref(CHAMPION_ONNX, 1), CHAMPION_ONNX, OPTIONS)


@pytest.fixture(scope="module")
def candidate() -> LoadedModel:
    return build_model(model_ref(CANDIDATE_ONNX, 2), CANDIDATE_ONNX, OPTIONS)


class FailingSession:
    """An onnxruntime session that fails on everything, as a broken candidate would."""

    def run(self, *_: Any) -> Any:
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : broken candidate")


def release(candidate: LoadedModel, mode: RolloutMode, percent: float = 30.0) -> Release:
    start = ModelRollout(
        rollout_id=uuid.uuid4(),
        action="started",
        mode=mode,
        candidate=candidate.ref,
        onnx_uri="s3://mlflow/models/v2.onnx",
        architecture="linear",
        champion_version=1,
        percent=100.0 if mode == "shadow" else percent,
        requested_by="tests@localhost",
    )
    rollout = fold(enumerate([promotion(CHAMPION_ONNX, 1), start])).rollout
    assert rollout is not None
    return Release(rollout, candidate)


async def run(
    champion: LoadedModel, drawings: Sequence[DigitSubmitted], rel: Release | None
) -> tuple[list[DigitPredicted], FakePublisher, WorkerMetrics]:
    published, deadletter, metrics = FakePublisher(), FakePublisher(), WorkerMetrics()
    handler = BatchHandler("worker-under-test", published, metrics)

    @typed_batch(DigitSubmitted, DeadLetterRejects(deadletter, SERVICE))
    async def on_submitted(deliveries: list[Delivery[DigitSubmitted]]) -> list[Rejected]:
        return await handler(champion, deliveries, rel)

    await deliver(on_submitted, records([d.to_bytes() for d in drawings]))
    return [DigitPredicted.from_bytes(b) for b in published.bodies], deadletter, metrics


async def test_a_canary_answers_each_drawing_once_by_the_version_its_id_routes_to(
    champion: LoadedModel, candidate: LoadedModel
) -> None:
    drawings = [submitted() for _ in range(200)]
    rel = release(candidate, "canary", 30.0)

    predicted, dead, _ = await run(champion, drawings, rel)

    assert sorted(p.digit_id for p in predicted) == sorted(d.digit_id for d in drawings)
    assert {p.kind for p in predicted} == {"live"}
    assert {p.rollout_id for p in predicted} == {rel.rollout.rollout_id}
    for p in predicted:
        expected = 2 if rel.rollout.candidate_answers(p.digit_id) else 1
        assert p.model.version == expected, p.digit_id
    assert 30 < sum(p.model.version == 2 for p in predicted) < 90  # 60 expected
    assert dead.bodies == []


async def test_a_redelivered_drawing_is_answered_by_the_same_version(
    champion: LoadedModel, candidate: LoadedModel
) -> None:
    drawings = [submitted() for _ in range(40)]
    rel = release(candidate, "canary", 50.0)

    first, _, _ = await run(champion, drawings, rel)
    again, _, _ = await run(champion, list(reversed(drawings)), rel)

    assert {(p.digit_id, p.model.version) for p in first} == {
        (p.digit_id, p.model.version) for p in again
    }


async def test_a_shadow_rollout_answers_with_the_champion_and_reads_with_both(
    champion: LoadedModel, candidate: LoadedModel
) -> None:
    drawings = [submitted() for _ in range(20)]
    rel = release(candidate, "shadow")

    predicted, dead, metrics = await run(champion, drawings, rel)

    live = [p for p in predicted if p.kind == "live"]
    shadow = [p for p in predicted if p.kind == "shadow"]
    ids = sorted(d.digit_id for d in drawings)
    assert sorted(p.digit_id for p in live) == ids and {p.model.version for p in live} == {1}
    assert sorted(p.digit_id for p in shadow) == ids and {p.model.version for p in shadow} == {2}
    assert {p.rollout_id for p in predicted} == {rel.rollout.rollout_id}
    assert [p.kind for p in predicted] == ["live"] * 20 + ["shadow"] * 20  # answers first
    assert dead.bodies == []
    shadow_count = metrics.predictions.labels(model_version="2", kind="shadow")._value.get()
    assert shadow_count == 20


@pytest.mark.parametrize("mode", ["canary", "shadow"])
async def test_a_failing_candidate_leaves_every_answer_to_the_champion(
    champion: LoadedModel, candidate: LoadedModel, mode: RolloutMode
) -> None:
    broken = LoadedModel(candidate.ref, FailingSession(), "CPUExecutionProvider")
    drawings = [submitted() for _ in range(30)]
    rel = release(broken, mode, 60.0)

    predicted, dead, metrics = await run(champion, drawings, rel)

    assert sorted(p.digit_id for p in predicted) == sorted(d.digit_id for d in drawings)
    assert {(p.kind, p.model.version) for p in predicted} == {("live", 1)}
    given = [d for d in drawings if mode == "shadow" or rel.rollout.candidate_answers(d.digit_id)]
    assert 0 < len(given) == metrics.candidate_failures.labels(model_version="2")._value.get()
    # Each failure is a dead letter for the verdict to count, saying the champion answered it.
    letters = [DeadLetter.from_bytes(body) for body in dead.bodies]
    assert sorted(DigitSubmitted.from_bytes(x.original).digit_id for x in letters) == sorted(
        d.digit_id for d in given
    )
    assert {(x.model_version, x.rollout_id, x.answered_by) for x in letters} == {
        (2, rel.rollout.rollout_id, 1)
    }


async def test_outside_a_rollout_predictions_name_no_rollout(champion: LoadedModel) -> None:
    predicted, _, _ = await run(champion, [submitted() for _ in range(5)], None)
    assert {(p.kind, p.model.version, p.rollout_id) for p in predicted} == {("live", 1, None)}


class PickySession:
    """A real session that fails on any batch holding a white square (all pixels 1)."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def run(self, outputs: Any, feeds: dict[str, Any]) -> Any:
        pixels = next(iter(feeds.values()))
        if (pixels.reshape(len(pixels), -1).min(axis=1) >= 1.0).any():
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : bad input")
        return self.session.run(outputs, feeds)


async def test_a_drawing_both_models_fail_on_is_dead_lettered_not_the_batch_retried(
    champion: LoadedModel, candidate: LoadedModel
) -> None:
    """In the candidate's share, a drawing the candidate fails on goes to the champion; if the
    champion fails on it too, it alone is rejected: the batch (and its partition) goes on."""
    picky_champion = LoadedModel(champion.ref, PickySession(champion.session), champion.provider)
    picky_candidate = LoadedModel(
        candidate.ref, PickySession(candidate.session), candidate.provider
    )
    rel = release(picky_candidate, "canary", 50.0)
    poison_id = next(i for i in iter(uuid.uuid4, None) if rel.rollout.candidate_answers(i))
    poison = submitted(digit_id=poison_id).model_copy(update={"model_input": b"\xff" * 784})
    good = [submitted() for _ in range(9)]

    predicted, dead, _ = await run(picky_champion, [poison, *good], rel)

    assert sorted(p.digit_id for p in predicted) == sorted(d.digit_id for d in good)
    letters = [DeadLetter.from_bytes(body) for body in dead.bodies]
    assert all("the model failed on this drawing" in x.error for x in letters)
    # One letter per version that failed on it; neither answered it.
    assert sorted((x.model_version, x.answered_by) for x in letters) == [(1, None), (2, None)]
    assert {DigitSubmitted.from_bytes(x.original).digit_id for x in letters} == {poison_id}


@pytest.mark.parametrize("mode", ["canary", "shadow"])
async def test_a_drawing_that_does_not_decode_is_dead_lettered_once_naming_no_model(
    champion: LoadedModel, candidate: LoadedModel, mode: RolloutMode
) -> None:
    """Decoding is the same for both versions: the candidate failing to decode a drawing is not
    the candidate's failure, and the champion is not asked to decode it again."""
    rel = release(candidate, mode, 100.0)
    broken = submitted().model_copy(
        update={
            "schema_version": 1,
            "model_input": None,
            "preprocessing_version": None,
            "image": b"\x89PNG not really",
        }
    )

    predicted, dead, metrics = await run(champion, [broken, submitted()], rel)

    assert len({p.digit_id for p in predicted}) == 1
    [letter] = [DeadLetter.from_bytes(body) for body in dead.bodies]
    assert (letter.model_version, letter.answered_by) == (None, None)
    assert metrics.candidate_failures.labels(model_version="2")._value.get() == 0


async def test_outside_a_rollout_a_models_failure_names_its_version(
    champion: LoadedModel,
) -> None:
    picky = LoadedModel(champion.ref, PickySession(champion.session), champion.provider)
    poison = submitted().model_copy(update={"model_input": b"\xff" * 784})

    _, dead, _ = await run(picky, [poison, submitted()], None)

    [letter] = [DeadLetter.from_bytes(body) for body in dead.bodies]
    assert (letter.model_version, letter.rollout_id, letter.answered_by) == (1, None, None)


async def test_a_champion_failing_on_its_whole_share_fails_the_batch(
    champion: LoadedModel, candidate: LoadedModel
) -> None:
    """The candidate answering its share does not hide a broken champion: its share is not
    dead-lettered but read again (the batch is not committed)."""
    broken = LoadedModel(champion.ref, FailingSession(), champion.provider)
    rel = release(candidate, "canary", 50.0)

    with pytest.raises(ModelFailingError):
        await run(broken, [submitted() for _ in range(20)], rel)
