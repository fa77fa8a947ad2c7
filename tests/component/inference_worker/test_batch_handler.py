"""The inference worker's batch handler: every good drawing predicted, every poison record in the
dead letters with what is needed to replay it, nothing lost."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
import pytest
from inference_worker.handlers import PIXEL_BUDGET, SERVICE, BatchHandler, ModelFailingError
from inference_worker.metrics import WorkerMetrics
from mnistream_common import tracing
from mnistream_common.consume import (
    Backoff,
    DeadLetterRejects,
    Delivery,
    Publisher,
    Rejected,
    typed_batch,
)
from mnistream_common.events import DeadLetter, DigitPredicted, DigitSubmitted
from mnistream_common.preprocessing import inputs_to_batch, prepare, preprocess, to_batch
from mnistream_serving.model import LoadedModel, RuntimeOptions, build_model
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.helpers import (
    FOUR,
    SEVEN,
    FakePublisher,
    FakeRecord,
    blank_png,
    deliver,
    drawing_png,
    encode_ink,
    model_ref,
    records,
    stroke_ink,
    submitted,
    tiny_onnx_model,
)

WORKER = "worker-under-test"


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    onnx_bytes = tiny_onnx_model(11)
    return build_model(model_ref(onnx_bytes, 6), onnx_bytes, RuntimeOptions(1, False, 4))


Handle = Callable[[LoadedModel, Sequence[FakeRecord]], Awaitable[None]]


def handler(
    predicted: Publisher | None = None,
    backoff: Backoff | None = None,
    pixel_budget: int = PIXEL_BUDGET,
) -> tuple[Handle, FakePublisher, FakePublisher]:
    """The worker's batch handler behind the typed subscriber seam, as the worker wires it."""
    published, deadletter = FakePublisher(), FakePublisher()
    batch_handler = BatchHandler(
        WORKER, predicted or published, WorkerMetrics(), backoff or Backoff(), pixel_budget
    )
    rejects = DeadLetterRejects(deadletter, SERVICE)

    async def handle(model: LoadedModel, batch: Sequence[FakeRecord]) -> None:
        @typed_batch(DigitSubmitted, rejects)
        async def on_submitted(deliveries: list[Delivery[DigitSubmitted]]) -> list[Rejected]:
            return await batch_handler(model, deliveries)

        await deliver(on_submitted, batch)

    return handle, published, deadletter


def predictions(publisher: FakePublisher) -> list[DigitPredicted]:
    return [DigitPredicted.from_bytes(body) for body in publisher.bodies]


def dead_letters(publisher: FakePublisher) -> list[DeadLetter]:
    return [DeadLetter.from_bytes(body) for body in publisher.bodies]


async def test_good_records_are_predicted_and_poison_dead_lettered_with_none_lost(
    model: LoadedModel,
) -> None:
    good = [
        submitted(drawing_png(SEVEN)),
        submitted(encode_ink(stroke_ink(FOUR), "jpeg")),
        submitted(drawing_png(FOUR, size=100)),
    ]
    foreign_version = json.loads(good[0].to_bytes())
    foreign_version["schema_version"] = 99
    blank, garbage = submitted(blank_png()), submitted(b"\x89PNG\r\n\x1a\n not really")
    values: list[bytes | None] = [
        good[0].to_bytes(),
        b"{definitely not json",
        good[1].to_bytes(),
        blank.to_bytes(),
        json.dumps(foreign_version).encode(),
        None,  # a tombstone: an erasure's mark, neither predicted nor a dead letter
        garbage.to_bytes(),
        good[2].to_bytes(),
    ]
    batch = records(values)
    handle, predicted, deadletter = handler()

    await handle(model, batch)

    made = predictions(predicted)
    assert [p.digit_id for p in made] == [e.digit_id for e in good]
    assert [p.key for p in predicted.sent] == [str(e.digit_id).encode() for e in good]
    for prediction, event in zip(made, good, strict=True):
        assert prediction.kind == "live"
        assert prediction.model == model.ref
        assert prediction.worker_id == WORKER
        assert prediction.provider == "CPUExecutionProvider"
        assert prediction.submitted_at == event.submitted_at
        assert len(prediction.probabilities) == 10
        assert sum(prediction.probabilities) == pytest.approx(1.0, abs=1e-4)
        assert prediction.predicted_digit == int(np.argmax(prediction.probabilities))
        assert prediction.confidence == pytest.approx(max(prediction.probabilities), abs=1e-6)
        assert prediction.timings.batch_size == 3
        assert prediction.job_id is None

    letters = dead_letters(deadletter)
    by_offset = {letter.source_offset: letter for letter in letters}
    assert sorted(by_offset) == [1, 3, 4, 6]
    for letter in letters:
        record = batch[letter.source_offset]
        assert (letter.source_topic, letter.source_partition) == ("digits.submitted", 0)
        assert letter.source_key == record.key
        assert letter.original == (record.value or b"")
        assert letter.service == "inference-worker"
    assert [p.key for p in deadletter.sent] == [
        batch[letter.source_offset].key for letter in letters
    ]
    assert by_offset[1].error.startswith("not a valid DigitSubmitted")
    assert "schema_version" in by_offset[4].error
    assert "blank" in by_offset[3].error
    assert "not a PNG or JPEG" in by_offset[6].error

    tombstones = sum(1 for record in batch if record.value is None)
    assert len(made) + len(letters) + tombstones == len(batch), (
        "every record is predicted, dead-lettered or a tombstone"
    )


async def test_predictions_are_the_models_reading_of_each_drawing(model: LoadedModel) -> None:
    images = [drawing_png(SEVEN), drawing_png(FOUR)]
    events = [submitted(image) for image in images]
    handle, predicted, _ = handler()

    await handle(model, records([e.to_bytes() for e in events]))

    expected = model.predict(to_batch([preprocess(image) for image in images]))
    for prediction, row in zip(predictions(predicted), expected, strict=True):
        np.testing.assert_allclose(prediction.probabilities, row, atol=1e-6)


async def test_a_batch_of_only_poison_publishes_only_dead_letters(model: LoadedModel) -> None:
    handle, predicted, deadletter = handler()

    await handle(model, records([b"", b"[]", submitted(blank_png()).to_bytes()]))

    assert predicted.sent == []
    assert sorted(letter.source_offset for letter in dead_letters(deadletter)) == [0, 1, 2]


async def test_records_from_several_partitions_keep_their_own_coordinates(
    model: LoadedModel,
) -> None:
    batch = [
        FakeRecord("digits.submitted", 3, 41, None, b"poison"),
        FakeRecord("digits.submitted", 11, 7, uuid.uuid4().bytes, b"more poison"),
        FakeRecord("digits.submitted", 0, 0, b"k", submitted().to_bytes()),
    ]
    handle, predicted, deadletter = handler()

    await handle(model, batch)

    coordinates = {
        (d.source_partition, d.source_offset, d.source_key) for d in dead_letters(deadletter)
    }
    assert coordinates == {(3, 41, None), (11, 7, batch[1].key)}
    assert len(predicted.sent) == 1


class FailingPublisher:
    """Kafka refusing to acknowledge."""

    async def publish(
        self, message: Any, *, key: bytes | None = None, headers: dict[str, str] | None = None
    ) -> None:
        raise ConnectionError("kafka is down")


async def test_an_unacknowledged_publish_fails_the_batch_so_nack_on_error_keeps_it_uncommitted(
    model: LoadedModel,
) -> None:
    """The handler raises instead of returning; the subscriber's NACK_ON_ERROR (asserted for
    every group in tests/unit/test_ack_policies.py) then leaves the batch uncommitted."""
    handle, _, deadletter = handler(FailingPublisher())

    with pytest.raises(ConnectionError):
        await handle(model, records([submitted().to_bytes()]))
    assert deadletter.sent == [], "an outage is not the drawing's fault"


async def test_a_version_2_drawing_is_read_from_its_model_input_never_decoded(
    model: LoadedModel,
) -> None:
    drawing = submitted(drawing_png(SEVEN))
    # The image is not even an image any more: only the carried input can be read.
    carried = drawing.model_copy(update={"image": b"not decoded by the worker"})
    handle, predicted, deadletter = handler()

    await handle(model, records([carried.to_bytes()]))

    assert deadletter.sent == []
    [prediction] = predictions(predicted)
    expected = model.predict(inputs_to_batch([drawing.model_input or b""]))[0]
    np.testing.assert_allclose(prediction.probabilities, expected, atol=1e-6)


async def test_a_version_1_drawing_gets_the_same_reading_as_its_version_2_twin(
    model: LoadedModel,
) -> None:
    image = drawing_png(FOUR)
    old, new = submitted(image, schema_version=1), submitted(image)
    handle, predicted, _ = handler()

    await handle(model, records([old.to_bytes(), new.to_bytes()]))

    first, second = predictions(predicted)
    assert old.model_input is None and new.model_input is not None
    assert first.probabilities == second.probabilities


class FailingOn(LoadedModel):
    """A model whose session.run fails on a batch holding a drawing it cannot take (`poison`
    as its first pixel), or on every batch."""

    def __init__(self, model: LoadedModel, *, always: bool = False) -> None:
        super().__init__(model.ref, model.session, model.provider)
        self.always = always

    def predict(self, pixels: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        if self.always or (pixels[:, 0, 0, 0] > 0.99).any():
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION")
        return super().predict(pixels)


async def test_a_drawing_the_model_fails_on_is_dead_lettered_and_the_rest_predicted(
    model: LoadedModel,
) -> None:
    good = [submitted(drawing_png(SEVEN)), submitted(drawing_png(FOUR))]
    poison_input = bytes([255]) + (good[0].model_input or b"")[1:]
    poison = good[0].model_copy(update={"digit_id": uuid.uuid4(), "model_input": poison_input})
    handle, predicted, deadletter = handler()

    await handle(FailingOn(model), records([e.to_bytes() for e in (good[0], poison, good[1])]))

    assert [p.digit_id for p in predictions(predicted)] == [e.digit_id for e in good]
    [letter] = dead_letters(deadletter)
    assert letter.original == poison.to_bytes()
    assert "the model failed on this drawing" in letter.error


async def test_a_model_failing_on_everything_pauses_longer_each_time_and_commits_nothing(
    model: LoadedModel,
) -> None:
    backoff = Backoff(first_s=0.01, max_s=0.04)
    handle, predicted, deadletter = handler(backoff=backoff)
    batch = records([submitted().to_bytes(), submitted().to_bytes()])

    pauses = []
    for _ in range(4):
        with pytest.raises(ModelFailingError):
            await handle(FailingOn(model, always=True), batch)
        pauses.append(backoff.last_s)
    assert pauses == [0.01, 0.02, 0.04, 0.04]  # doubling, capped
    assert predicted.sent == [] and deadletter.sent == []

    await handle(model, batch)
    assert backoff.failures == 0
    assert len(predicted.sent) == 2


async def test_drawings_to_decode_follow_in_parts_within_the_pixel_budget(
    model: LoadedModel,
) -> None:
    """A batch of three large version 1 records (to decode) around a drawing that carries its
    input: the ready drawing is predicted and published first, then the large ones in parts of
    at most the budget (one 512 × 512 image each here), each part its own session.run."""
    large = drawing_png(FOUR, size=512)
    batch = [
        submitted(large, schema_version=1),
        submitted(drawing_png(SEVEN)),
        submitted(large, schema_version=1),
        submitted(large, schema_version=1),
    ]
    published = FakePublisher()
    batch_handler = BatchHandler(WORKER, published, WorkerMetrics(), pixel_budget=512 * 512)
    deliveries = [
        Delivery(e, FakeRecord("digits.submitted", 0, n, None, e.to_bytes()))
        for n, e in enumerate(batch)
    ]

    rejected = await batch_handler(model, deliveries)

    assert rejected == []
    order = [p.digit_id for p in predictions(published)]
    assert order == [batch[1].digit_id, batch[0].digit_id, batch[2].digit_id, batch[3].digit_id]
    assert [p.timings.batch_size for p in predictions(published)] == [1, 1, 1, 1]

    # Within the budget they go together: the three large ones in one part.
    together = FakePublisher()
    roomy = BatchHandler(WORKER, together, WorkerMetrics(), pixel_budget=3 * 512 * 512)
    await roomy(model, deliveries)
    assert [p.timings.batch_size for p in predictions(together)] == [1, 3, 3, 3]


class FailingOnInput(LoadedModel):
    """A model whose session.run fails on any batch holding one given input."""

    def __init__(self, model: LoadedModel, bad: bytes) -> None:
        super().__init__(model.ref, model.session, model.provider)
        self.bad = inputs_to_batch([bad])[0]

    def predict(self, pixels: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        if any(np.allclose(row, self.bad) for row in pixels):
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION")
        return super().predict(pixels)


async def test_a_part_the_model_fails_on_alone_is_dead_lettered_not_taken_for_a_failing_model(
    model: LoadedModel,
) -> None:
    """The one version 1 drawing of a batch is a part of its own, and the model fails on it:
    it is dead-lettered and the rest is predicted, as in a batch of one part. Only the model
    failing on every drawing of the batch fails the batch."""
    ready = submitted(drawing_png(SEVEN))
    large = drawing_png(FOUR, size=512)
    older = submitted(large, schema_version=1)
    handle, predicted, deadletter = handler(pixel_budget=1)

    await handle(
        FailingOnInput(model, prepare(large).model_input),
        records([ready.to_bytes(), older.to_bytes()]),
    )

    assert [p.digit_id for p in predictions(predicted)] == [ready.digit_id]
    [letter] = dead_letters(deadletter)
    assert letter.original == older.to_bytes()
    assert "the model failed on this drawing" in letter.error


async def test_each_prediction_carries_its_drawings_trace_on(model: LoadedModel) -> None:
    """With tracing on, a prediction's record carries the span that read its drawing, in the
    drawing's trace (history's spans join it); untraced drawings' predictions carry none."""
    exporter = InMemorySpanExporter()
    tracing.configure_tracing("test", "", exporter=exporter)
    try:
        handle, published, _ = handler()
        traces = ["4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c", None]
        batch = [
            FakeRecord(
                "digits.submitted",
                0,
                n,
                None,
                submitted().to_bytes(),
                [("traceparent", f"00-{t}-00f067aa0ba902b7-01".encode())] if t else [],
            )
            for n, t in enumerate(traces)
        ]
        await handle(model, batch)
    finally:
        tracing.shutdown_tracing()
    carried = [p.headers.get("traceparent", "").split("-")[1:2] for p in published.sent]
    assert carried == [[traces[0]], [traces[1]], []]
    drawing_spans = {
        format(s.context.trace_id, "032x"): s
        for s in exporter.get_finished_spans()
        if s.parent is not None
    }
    attributes = drawing_spans[str(traces[0])].attributes or {}
    assert attributes["mnistream.model_version"] == 6
    assert attributes["mnistream.batch_size"] == 3
