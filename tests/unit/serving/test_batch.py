"""One micro-batch: every good image scored in one session.run, bad images kept apart."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from mnistream_common.events import Timings
from mnistream_common.preprocessing import preprocess, to_batch
from mnistream_serving.batch import BatchResult, prediction_event, score_batch
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


def test_good_images_are_scored_in_one_run_and_bad_ones_kept_apart(served: LoadedModel) -> None:
    model, session = counting(served)
    items = [
        ("seven", drawing_png(SEVEN)),
        ("blank", blank_png()),
        ("four", drawing_png(FOUR)),
        ("garbage", b"not an image"),
        ("animated", animated_png()),
        ("seven-again", drawing_png(SEVEN, size=140)),
    ]

    result = score_batch(model, items)

    assert [s.item for s in result.scored] == ["seven", "four", "seven-again"]
    assert {f.item: f.error for f in result.failed}.keys() == {"blank", "garbage", "animated"}
    errors = {f.item: f.error for f in result.failed}
    assert errors["blank"].startswith("preprocessing failed: the drawing is blank")
    assert "not a PNG or JPEG" in errors["garbage"]
    assert "animated" in errors["animated"]
    assert session.batch_sizes == [3]
    assert result.preprocess_ms >= 0
    assert result.inference_ms >= 0


def test_each_image_gets_its_own_probabilities(served: LoadedModel) -> None:
    images = [drawing_png(SEVEN), drawing_png(FOUR)]

    result = score_batch(served, list(enumerate(images)))

    expected = served.predict(to_batch([preprocess(image) for image in images]))
    for scored in result.scored:
        np.testing.assert_allclose(scored.probabilities, expected[scored.item], rtol=1e-6)
        assert scored.probabilities.shape == (10,)
        assert float(scored.probabilities.sum()) == pytest.approx(1.0, abs=1e-5)


def test_a_batch_with_nothing_usable_runs_no_inference(served: LoadedModel) -> None:
    model, session = counting(served)

    result = score_batch(model, [(1, blank_png()), (2, b"")])

    assert result.scored == []
    assert [f.item for f in result.failed] == [1, 2]
    assert session.batch_sizes == []


def test_an_empty_batch_is_fine(served: LoadedModel) -> None:
    result: BatchResult[int] = score_batch(served, [])

    assert (result.scored, result.failed) == ([], [])


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
