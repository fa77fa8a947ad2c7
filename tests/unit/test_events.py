"""The event contracts: what producers put on Kafka is what consumers get back, and bad input is
rejected with a reason a person can act on. Topic specs match docs/design.md."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from mnistream_common.events import (
    ALL_EVENTS,
    ClientInfo,
    DeadLetter,
    DigitErased,
    DigitLabeled,
    DigitPredicted,
    DigitSubmitted,
    Event,
    InvalidEventError,
    LedgerRecords,
    ModelPromoted,
    ModelRef,
    ModelRollout,
    RescoreSkipped,
    RescoreTask,
    SkippedDrawing,
    Timings,
)
from mnistream_common.schemas import schema_version
from mnistream_common.topics import ALL_TOPICS, SEVEN_DAYS_MS, UNLIMITED, TopicSpec, topic_for
from pydantic import ValidationError

from tests.helpers import prediction

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# Bytes that differ between the standard and the URL-safe base64 alphabets.
AWKWARD_BYTES = b"\xfb\xff\xfe>?\x00\x01"
MODEL = ModelRef(name="mnist-digits", version=3, sha256="ab" * 32)


# Every byte value, as a 28×28 input would never hold it but the wire must carry it.
MODEL_INPUT = bytes(range(256)) * 3 + bytes(16)


def sample_events() -> list[Event]:
    """One fully populated event of every kind."""
    digit_id = uuid.uuid4()
    return [
        DigitSubmitted(
            digit_id=digit_id,
            submitted_at=AT,
            media_type="image/png",
            image=AWKWARD_BYTES,
            width=280,
            height=280,
            model_input=MODEL_INPUT,
            preprocessing_version=1,
            client=ClientInfo(source="web", user_agent="pytest", remote_addr="127.0.0.1"),
        ),
        _predicted(digit_id),
        DigitLabeled(digit_id=digit_id, label=7, labeled_at=AT),
        ModelPromoted(
            model=MODEL,
            previous_version=2,
            onnx_uri="s3://mlflow/1/abc/artifacts/model/model.onnx",
            architecture="cnn",
            metrics={"accuracy": 0.993},
            promoted_by="ada",
            reason="better on corrected labels",
            promoted_at=AT,
        ),
        ModelRollout(
            rollout_id=uuid.uuid4(),
            action="started",
            mode="canary",
            candidate=MODEL,
            onnx_uri="s3://mlflow/1/abc/artifacts/model/model.onnx",
            architecture="cnn",
            champion_version=2,
            percent=20.0,
            requested_by="ada",
            reason="try it on a fifth of the drawings",
        ),
        RescoreTask(
            job_id=uuid.uuid4(),
            kind="rescore",
            model=MODEL,
            onnx_uri="s3://mlflow/1/abc/artifacts/model/model.onnx",
            chunk_index=0,
            chunk_count=2,
            job_total=3,
            digit_ids=[digit_id, uuid.uuid4()],
        ),
        RescoreSkipped(
            job_id=uuid.uuid4(),
            kind="rescore",
            model=MODEL,
            chunk_index=1,
            job_total=3,
            skipped=[SkippedDrawing(digit_id=digit_id, reason="not stored")],
            worker_id="rescore-0",
        ),
        DigitErased(digit_id=digit_id, erased_at=AT, requested_by="ada", reason="request 42"),
        DeadLetter(
            source_topic="digits.submitted",
            source_partition=4,
            source_offset=17,
            source_key=str(digit_id).encode(),
            original=AWKWARD_BYTES,
            error="not a valid DigitSubmitted: <root>: Invalid JSON",
            service="inference-worker",
            failed_at=AT,
        ),
    ]


def _predicted(digit_id: uuid.UUID) -> DigitPredicted:
    return prediction(
        digit_id,
        MODEL,
        timings=Timings(queue_ms=1.5, preprocess_ms=0.4, inference_ms=0.8, batch_size=4),
        worker_id="inference-worker-1",
        submitted_at=AT,
    )


def payload_of(event: Event) -> dict[str, Any]:
    """The JSON object an event travels as."""
    payload: dict[str, Any] = json.loads(event.to_bytes())
    return payload


def encode(payload: dict[str, Any]) -> bytes:
    """A Kafka record value made from a JSON object."""
    return json.dumps(payload).encode()


def labeled_payload(**changes: Any) -> dict[str, Any]:
    """A valid DigitLabeled payload with some fields changed."""
    return {**payload_of(DigitLabeled(digit_id=uuid.uuid4(), label=3, labeled_at=AT)), **changes}


def predicted_payload(**changes: Any) -> dict[str, Any]:
    """A valid DigitPredicted payload with some fields changed."""
    return {**payload_of(_predicted(uuid.uuid4())), **changes}


def rejection(event: type[Event], raw: bytes) -> str:
    """The message of the InvalidEventError that parsing `raw` raises."""
    with pytest.raises(InvalidEventError) as caught:
        event.from_bytes(raw)
    assert caught.value.event_name == event.__name__
    return str(caught.value)


def test_the_samples_cover_every_event() -> None:
    assert {type(event) for event in sample_events()} == set(ALL_EVENTS)


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: type(e).event_type)
def test_every_event_round_trips_through_bytes(event: Event) -> None:
    assert type(event).from_bytes(event.to_bytes()) == event


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: type(e).event_type)
def test_every_event_carries_the_envelope(event: Event) -> None:
    payload = payload_of(event)
    assert uuid.UUID(payload["event_id"]) == event.event_id
    assert datetime.fromisoformat(payload["occurred_at"]).tzinfo is not None
    assert payload["schema_version"] == schema_version(type(event))


def test_event_ids_are_unique_per_event() -> None:
    first, second = sample_events(), sample_events()
    assert {e.event_id for e in first}.isdisjoint({e.event_id for e in second})


def test_bytes_travel_as_base64_in_json() -> None:
    submitted, dead = sample_events()[0], sample_events()[-1]
    assert payload_of(submitted)["image"] == base64.urlsafe_b64encode(AWKWARD_BYTES).decode()
    assert payload_of(dead)["original"] == base64.urlsafe_b64encode(AWKWARD_BYTES).decode()


def test_standard_base64_as_the_base64_tool_writes_it_is_accepted() -> None:
    payload = payload_of(sample_events()[0]) | {"image": base64.b64encode(AWKWARD_BYTES).decode()}
    assert DigitSubmitted.from_bytes(encode(payload)).image == AWKWARD_BYTES


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: type(e).event_type)
def test_events_are_frozen(event: Event) -> None:
    with pytest.raises(ValidationError, match="frozen"):
        event.event_id = uuid.uuid4()  # type: ignore[misc]  # what mypy also forbids


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: type(e).event_type)
def test_unknown_fields_are_rejected(event: Event) -> None:
    message = rejection(type(event), encode(payload_of(event) | {"colour": "red"}))
    assert "colour: Extra inputs are not permitted" in message


def test_unknown_nested_fields_are_rejected() -> None:
    payload = predicted_payload()
    payload["model"] = payload["model"] | {"stage": "prod"}
    assert "model.stage: Extra inputs are not permitted" in rejection(
        DigitPredicted, encode(payload)
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(b"{not json", "<root>: Invalid JSON", id="invalid-json"),
        pytest.param(b"", "<root>: Invalid JSON", id="empty"),
        pytest.param(b"\xff\xfe\x00", "<root>: Invalid JSON", id="not-utf8"),
        pytest.param(b"[1, 2]", "<root>: Input should be an object", id="array"),
    ],
)
def test_a_value_that_is_no_json_object_is_rejected(raw: bytes, expected: str) -> None:
    assert expected in rejection(DigitLabeled, raw)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({"label": "seven"}, "label: Input should be a valid integer", id="label-str"),
        pytest.param({"label": [7]}, "label: Input should be a valid integer", id="label-list"),
        pytest.param(
            {"label": 10}, "label: Input should be less than or equal to 9", id="digit-10"
        ),
        pytest.param({"label": -1}, "label: Input should be greater than or equal to 0", id="-1"),
        pytest.param({"digit_id": "42"}, "digit_id: Input should be a valid UUID", id="uuid"),
        pytest.param(
            {"labeled_at": "2026-03-01T12:00:00"},
            "labeled_at: Input should have timezone info",
            id="naive-time",
        ),
        pytest.param(
            {"schema_version": 3}, "schema_version: Input should be 1 or 2", id="version-3"
        ),
    ],
)
def test_a_wrong_field_is_named_with_its_problem(changes: dict[str, Any], expected: str) -> None:
    assert expected in rejection(DigitLabeled, encode(labeled_payload(**changes)))


@pytest.mark.parametrize("field", ["digit_id", "label", "labeled_at"])
def test_a_missing_field_is_named(field: str) -> None:
    payload = labeled_payload()
    del payload[field]
    assert f"{field}: Field required" in rejection(DigitLabeled, encode(payload))


@pytest.mark.parametrize("count", [0, 9, 11])
def test_probabilities_must_be_ten(count: int) -> None:
    message = rejection(DigitPredicted, encode(predicted_payload(probabilities=[0.1] * count)))
    assert "probabilities: List should have at" in message
    assert "10 items" in message


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"predicted_digit": 10}, "predicted_digit: Input should be less than or equal to 9"),
        ({"confidence": 1.5}, "confidence: Input should be less than or equal to 1"),
        ({"kind": "batch"}, "kind: Input should be 'live', 'rescore', 'candidate' or 'shadow'"),
        ({"kind": "shadow"}, "a shadow prediction names its rollout"),
        ({"schema_version": 1, "rollout_id": str(uuid.uuid4())}, "version 1 predictions have"),
    ],
)
def test_prediction_values_outside_their_range_are_rejected(
    changes: dict[str, Any], expected: str
) -> None:
    assert expected in rejection(DigitPredicted, encode(predicted_payload(**changes)))


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: type(e).event_type)
def test_a_future_schema_version_is_rejected_not_guessed(event: Event) -> None:
    future = schema_version(type(event)) + 1
    message = rejection(type(event), encode(payload_of(event) | {"schema_version": future}))
    assert "schema_version: Input should be" in message


def v1_payload() -> dict[str, Any]:
    """A digits.submitted record as the v1 code wrote it (no model input)."""
    payload = payload_of(sample_events()[0])
    del payload["model_input"], payload["preprocessing_version"]
    return payload | {"schema_version": 1}


def test_a_version_1_drawing_still_parses_without_a_model_input() -> None:
    event = DigitSubmitted.from_bytes(encode(v1_payload()))
    assert event.schema_version == 1
    assert event.model_input is None and event.preprocessing_version is None


def test_a_version_2_drawing_needs_its_model_input() -> None:
    message = rejection(DigitSubmitted, encode(v1_payload() | {"schema_version": 2}))
    assert "version 2 needs model_input and preprocessing_version" in message


def test_a_version_1_drawing_carries_no_model_input() -> None:
    payload = payload_of(sample_events()[0]) | {"schema_version": 1}
    assert "version 1 has no model_input" in rejection(DigitSubmitted, encode(payload))


def test_a_model_input_is_28_by_28_bytes() -> None:
    short = base64.urlsafe_b64encode(MODEL_INPUT[:-1]).decode()
    message = rejection(
        DigitSubmitted, encode(payload_of(sample_events()[0]) | {"model_input": short})
    )
    assert "model_input" in message and "784" in message


def test_many_problems_are_summarised() -> None:
    message = rejection(DigitPredicted, b"{}")
    assert message.startswith("not a valid DigitPredicted: ")
    assert "Field required" in message
    assert "(and 4 more)" in message


def test_invalid_event_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a valid DigitLabeled"):
        DigitLabeled.from_bytes(b"{}")


def test_event_types_are_unique() -> None:
    types = [event.event_type for event in ALL_EVENTS]
    assert len(set(types)) == len(types)


# ---------------------------------------------------------------- topics

# docs/design.md, "Topics": name → (key, partitions, retention)
DESIGN_TOPICS = {
    "digits.submitted": ("digit id", 12, UNLIMITED),
    "digits.predicted": ("digit id", 12, UNLIMITED),
    "digits.labeled": ("digit id", 12, UNLIMITED),
    "model.promoted": ("model name", 1, UNLIMITED),
    "rescore.tasks": ("job id", 12, SEVEN_DAYS_MS),
    "rescore.skipped": ("job id", 12, UNLIMITED),
    "digits.erased": ("digit id", 12, UNLIMITED),
    "digits.deadletter": ("source key", 3, UNLIMITED),
}


def test_topics_are_those_of_the_design() -> None:
    actual = {t.name: (t.key, t.partitions, t.retention_ms) for t in ALL_TOPICS}
    assert actual == DESIGN_TOPICS


def test_seven_days_is_seven_days() -> None:
    assert SEVEN_DAYS_MS == 604_800_000


def test_topic_names_are_unique() -> None:
    names = [t.name for t in ALL_TOPICS]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: e.event_type)
def test_every_event_has_exactly_one_topic(event: type[Event]) -> None:
    assert len([t for t in ALL_TOPICS if event in t.events]) == 1


def test_the_ledger_reads_promotions_and_rollout_steps_by_their_shape() -> None:
    promoted, rollout = (e for e in sample_events() if isinstance(e, ModelPromoted | ModelRollout))
    assert LedgerRecords.from_bytes(promoted.to_bytes()) == promoted
    assert LedgerRecords.from_bytes(rollout.to_bytes()) == rollout


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"model": 1}', "not a valid ModelPromoted: model: Input should be an object"),
        (b'{"rollout_id": "x"}', "not a valid ModelRollout: rollout_id: Input should be a valid"),
        (b"[1]", "not a valid ModelPromoted: <root>: Input should be an object"),
        (b"{not json", "not a valid ModelPromoted: <root>: Invalid JSON"),
    ],
)
def test_an_invalid_ledger_record_is_rejected_with_its_kinds_reason(
    raw: bytes, expected: str
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        LedgerRecords.from_bytes(raw)
    assert str(caught.value).startswith(expected)


def test_a_shadow_rollout_reads_every_drawing() -> None:
    rollout = next(e for e in sample_events() if isinstance(e, ModelRollout))
    payload = payload_of(rollout) | {"mode": "shadow", "percent": 50.0}
    assert "a shadow rollout reads every drawing" in rejection(ModelRollout, encode(payload))


@pytest.mark.parametrize("spec", ALL_TOPICS, ids=lambda t: t.name)
def test_every_topic_has_producers_consumers_and_its_retention_in_config(spec: TopicSpec) -> None:
    assert spec.producers
    assert spec.consumers
    assert spec.config()["retention.ms"] == str(spec.retention_ms)
    assert topic_for(spec.name) is spec


def test_an_unknown_topic_is_named_with_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"unknown topic 'digits\.drawn'.*digits\.submitted"):
        topic_for("digits.drawn")
