"""The gateway's once-a-second log line of accepted uploads: every digit id, and each one's
trace id in the same place when any upload was traced."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest
from gateway.upload_log import UploadLog
from mnistream_common.logs import configure_logging


def logged(capsys: pytest.CaptureFixture[str], log: UploadLog) -> dict[str, Any]:
    configure_logging("gateway")
    try:
        log.flush()
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if "accepted" in x]
    assert len(lines) == 1, lines
    line: dict[str, Any] = lines[0]
    return line


def test_trace_ids_line_up_with_the_digit_ids_they_belong_to(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = UploadLog()
    ids = [uuid.uuid4() for _ in range(3)]
    log.accepted(ids[0], 10, predicted=False)  # sampled out: no trace
    log.accepted(ids[1], 10, predicted=True, trace_id="a" * 32)
    log.accepted(ids[2], 10, predicted=False)
    line = logged(capsys, log)
    assert line["digit_ids"] == [str(i) for i in ids]
    assert line["trace_ids"] == [None, "a" * 32, None]
    assert log.trace_ids == [] and log.digit_ids == []


def test_without_tracing_the_line_has_no_trace_ids(capsys: pytest.CaptureFixture[str]) -> None:
    log = UploadLog()
    log.accepted(uuid.uuid4(), 10, predicted=False)
    assert "trace_ids" not in logged(capsys, log)
