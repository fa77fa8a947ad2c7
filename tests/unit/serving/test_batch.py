"""One micro-batch: every good image scored in one session.run, bad images kept apart."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from mnistream_common.events import Timings
from mnistream_common.preprocessing import preprocess, to_batch
from mnistream_serving.batch import BatchResult, prediction_event, prepare_inputs, score_inputs
from mnistream_serving.model import LoadedModel, RuntimeOptions, build_model

from tests.helpers import (
    FOUR,
    SEVEN,
    animated_png,
    blank_png,
    drawing_png,
    model_ref,
    tiny_onnx_model,
)


@dataclass
class CountingSession:
    """An onnxruntime session that counts its runs and the batch sizes it saw."""

    inner: Any
    batch_sizes: list[int] = field(default_factory=list)

    def run(self, outputs: list[str], feeds: dict[str, Any]) -> Any:
        self.batch_sizes.append(len(next(iter(feeds.values()))))
        return self.inner.run(outputs, feeds)


@pytest.fixture(scope="module")
def served() -> LoadedModel:
    onnx_bytes = tiny_onnx_model(3)
    return build_model(model_ref(onnx_bytes, 3), onnx_bytes, RuntimeOptions(1, False, 4))


def counting(model: LoadedModel) -> tuple[LoadedModel, CountingSession]:
    session = CountingSession(model.session)
    return LoadedModel(model.ref, session, model.provider), session


def test_good_images_become_inputs_and_bad_ones_are_kept_apart_with_the_reason() -> None:
    items = [
        ("seven", drawing_png(SEVEN)),
        ("blank", blank_png()),
        ("four", drawing_png(FOUR)),
        ("garbage", b"not an image"),
        ("animated", animated_png()),
        ("seven-again", drawing_png(SEVEN, size=140)),
    ]

    prepared, failed = prepare_inputs(items)

    assert [item for item, _ in prepared] == ["seven", "four", "seven-again"]
    assert all(len(model_input) == 784 for _, model_input in prepared)
    errors = {f.item: f.error for f in failed}
    assert errors.keys() == {"blank", "garbage", "animated"}
    assert errors["blank"].startswith("preprocessing failed: the drawing is blank")
    assert "not a PNG or JPEG" in errors["garbage"]
    assert "animated" in errors["animated"]


def test_inputs_are_scored_in_one_session_run(served: LoadedModel) -> None:
    model, session = counting(served)
    prepared, _ = prepare_inputs(
        [(i, drawing_png(SEVEN, size=s)) for i, s in enumerate((80, 280, 600))]
    )

    result = score_inputs(model, prepared)

    assert [s.item for s in result.scored] == [0, 1, 2]
    assert session.batch_sizes == [3]
    assert result.inference_ms > 0, "the batch's session.run is timed"


def test_each_input_gets_its_own_probabilities(served: LoadedModel) -> None:
    images = [drawing_png(SEVEN), drawing_png(FOUR)]
    prepared, _ = prepare_inputs(list(enumerate(images)))

    result = score_inputs(served, prepared)

    expected = served.predict(to_batch([preprocess(image) for image in images]))
    for scored in result.scored:
        np.testing.assert_allclose(scored.probabilities, expected[scored.item], rtol=1e-6)
        assert scored.probabilities.shape == (10,)
        assert float(scored.probabilities.sum()) == pytest.approx(1.0, abs=1e-5)


def test_nothing_to_score_runs_no_inference(served: LoadedModel) -> None:
    model, session = counting(served)

    result: BatchResult[int] = score_inputs(model, [])

    assert (result.scored, result.failed) == ([], [])
    assert session.batch_sizes == []


def test_prediction_event_names_the_best_digit_and_its_confidence(served: LoadedModel) -> None:
    probabilities = np.full(10, 0.02, dtype=np.float32)
    probabilities[7] = 0.82
    digit_id = uuid.uuid4()
    job_id = uuid.uuid4()

    event = prediction_event(
        digit_id=digit_id,
        probabilities=probabilities,
        model=served.ref,
        kind="rescore",
        timings=Timings(queue_ms=1.0, preprocess_ms=0.5, inference_ms=0.3, batch_size=2),
        worker_id="w-1",
        provider=served.provider,
        job_id=job_id,
        job_total=40,
    )

    assert event.digit_id == digit_id
    assert event.predicted_digit == 7
    assert event.confidence == pytest.approx(0.82)
    assert len(event.probabilities) == 10
    assert (event.kind, event.job_id, event.job_total) == ("rescore", job_id, 40)
    assert event.model == served.ref
