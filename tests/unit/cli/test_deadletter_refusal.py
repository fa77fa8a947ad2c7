"""Which dead letters `mnistream replay deadletter` may re-publish (the rest are refused)."""

from __future__ import annotations

import uuid

import pytest
from mnistream_cli.replay import REPLAYABLE, refusal
from mnistream_common.events import DeadLetter, DigitLabeled, ModelRef, utc_now
from mnistream_common.rescore import plan_chunks, task_key
from mnistream_common.topics import DIGITS_DEADLETTER, MODEL_PROMOTED

from tests.helpers import promotion, submitted


def letter(topic: str, original: bytes, key: bytes | None) -> DeadLetter:
    return DeadLetter(
        source_topic=topic,
        source_partition=0,
        source_offset=0,
        source_key=key,
        original=original,
        error="test",
        service="tests",
        failed_at=utc_now(),
    )


LABEL = DigitLabeled(digit_id=uuid.uuid4(), label=4, labeled_at=utc_now())
MODEL = ModelRef(name="mnist-digits", version=1, sha256="ab" * 32)


def test_a_label_that_reads_again_goes_back() -> None:
    assert (
        refusal(
            letter("digits.labeled", LABEL.to_bytes(), str(LABEL.digit_id).encode()), REPLAYABLE
        )
        is None
    )


@pytest.mark.parametrize(
    ("topic", "original", "key", "reason"),
    [
        (MODEL_PROMOTED.name, promotion(b"forged").to_bytes(), b"mnist-digits", "is not replayed"),
        (DIGITS_DEADLETTER.name, b"{}", None, "is not replayed"),
        ("digits.labeled", b'{"label": 42}', b"k", "still not a valid DigitLabeled"),
        (
            "digits.submitted",
            LABEL.to_bytes(),
            str(LABEL.digit_id).encode(),
            "still not a valid DigitSubmitted",
        ),
        ("digits.labeled", LABEL.to_bytes(), b"someone-else", "key is not the DigitLabeled's own"),
    ],
    ids=["promotion", "dead-letter-loop", "still-invalid", "other-topic's-event", "wrong-key"],
)
def test_anything_else_is_refused_with_the_reason(
    topic: str, original: bytes, key: bytes | None, reason: str
) -> None:
    problem = refusal(letter(topic, original, key), REPLAYABLE)
    assert problem is not None and reason in problem


def test_a_rescore_task_goes_back_under_its_own_job_and_chunk_key() -> None:
    """Tasks are keyed `job_id:chunk` (so one job spreads over partitions): a dead-lettered task
    was refused as carrying someone else's key when only the job id was accepted."""
    [task] = plan_chunks(
        uuid.uuid4(), "rescore", MODEL, "s3://mlflow/models/v1.onnx", [uuid.uuid4()], 10
    )

    assert refusal(letter("rescore.tasks", task.to_bytes(), task_key(task)), REPLAYABLE) is None
    wrong = letter("rescore.tasks", task.to_bytes(), str(task.job_id).encode())
    assert "key is not" in (refusal(wrong, REPLAYABLE) or "")


def test_a_letter_of_an_erased_drawing_is_refused() -> None:
    drawing = submitted()
    key = str(drawing.digit_id).encode()
    held = letter("digits.submitted", drawing.to_bytes(), key)

    assert refusal(held, REPLAYABLE) is None
    assert refusal(held, REPLAYABLE, erased={drawing.digit_id}) == "its drawing was erased"


def test_a_candidates_failure_the_champion_answered_is_not_replayed() -> None:
    """During a rollout a candidate's failure on a drawing is dead-lettered for the verdict to
    count, but the champion answered the drawing: re-publishing it would read it again."""
    drawing = submitted()
    held = letter("digits.submitted", drawing.to_bytes(), str(drawing.digit_id).encode())
    rollout_id = uuid.uuid4()
    unanswered = held.model_copy(update={"model_version": 2, "rollout_id": rollout_id})
    answered = unanswered.model_copy(update={"answered_by": 1})

    assert refusal(unanswered, REPLAYABLE) is None
    assert "answered by v1" in (refusal(answered, REPLAYABLE) or "")
