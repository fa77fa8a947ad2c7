"""The history consumers retry only the failures that a retry can fix (outages)."""

from __future__ import annotations

import pytest
from history_service.consumers import _retryable
from mnistream_common.events import InvalidEventError, ModelPromoted


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
