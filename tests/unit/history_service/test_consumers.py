"""The history consumers split a batch into events to store and poison for the dead letters,
and retry only failures that a retry can fix."""

from __future__ import annotations

import json

import pytest
from history_service.consumers import _parse, _retryable
from mnistream_common.events import DigitLabeled, InvalidEventError, ModelPromoted

from tests.helpers import promotion, records, tiny_onnx_model


def test_a_batch_splits_into_events_and_poison_with_none_lost() -> None:
    good = [promotion(tiny_onnx_model(1), 1), promotion(tiny_onnx_model(2), 2, previous=1)]
    labeled_by_mistake = DigitLabeled.model_validate_json(
        json.dumps(
            {
                "digit_id": "01953c1e-8a4b-7c2d-9e0f-1a2b3c4d5e6f",
                "label": 3,
                "labeled_at": "2026-03-01T12:00:00Z",
            }
        )
    )
    batch = records(
        [good[0].to_bytes(), b"", labeled_by_mistake.to_bytes(), good[1].to_bytes(), None],
        topic="model.promoted",
    )

    events, poison = _parse(batch, ModelPromoted)

    assert events == good
    assert [record.offset for record, _ in poison] == [1, 2, 4]
    assert all(reason.startswith("not a valid ModelPromoted") for _, reason in poison)


def invalid_event() -> InvalidEventError:
    try:
        ModelPromoted.from_bytes(b"{}")
    except InvalidEventError as exc:
        return exc
    raise AssertionError("an empty object should not be a promotion")


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (ConnectionRefusedError("postgres is down"), True),
        (TimeoutError(), True),
        (OSError("minio unreachable"), True),
        (invalid_event(), False),
        (TypeError("a bug"), False),
        (KeyError("kind"), False),
    ],
    ids=["refused", "timeout", "os-error", "invalid-event", "type-error", "key-error"],
)
def test_only_outages_are_retried(error: BaseException, retry: bool) -> None:
    assert _retryable(error) is retry
