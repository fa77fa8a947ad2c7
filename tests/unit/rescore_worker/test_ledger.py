"""A rescore job is superseded once a newer promotion has been read from the ledger."""

from __future__ import annotations

import uuid

from mnistream_common.rescore import job_id_for
from rescore_worker.ledger import Ledger

from tests.helpers import promotion, tiny_onnx_model

FIRST = promotion(tiny_onnx_model(1), 1)
SECOND = promotion(tiny_onnx_model(2), 2, previous=1)
ROLLBACK = promotion(tiny_onnx_model(1), 1, previous=2)


def test_the_newest_promotion_is_not_superseded() -> None:
    ledger = Ledger()
    ledger.record(FIRST, 0)
    ledger.record(SECOND, 1)

    assert not ledger.superseded(job_id_for(SECOND))
    assert ledger.superseded(job_id_for(FIRST))


def test_a_rollback_supersedes_the_job_it_rolls_back() -> None:
    ledger = Ledger()
    for offset, event in enumerate([FIRST, SECOND, ROLLBACK]):
        ledger.record(event, offset)

    assert ledger.superseded(job_id_for(SECOND))
    assert ledger.superseded(job_id_for(FIRST))
    assert not ledger.superseded(job_id_for(ROLLBACK))


def test_a_job_whose_promotion_was_not_read_yet_is_rescored() -> None:
    ledger = Ledger()
    ledger.record(FIRST, 0)

    assert not ledger.superseded(job_id_for(SECOND))
    assert not ledger.superseded(uuid.uuid4())


def test_reading_the_ledger_out_of_order_keeps_the_highest_offset_newest() -> None:
    ledger = Ledger()
    ledger.record(SECOND, 1)
    ledger.record(FIRST, 0)

    assert ledger.latest_offset == 1
    assert ledger.superseded(job_id_for(FIRST))
    assert not ledger.superseded(job_id_for(SECOND))


def test_an_empty_ledger_supersedes_nothing() -> None:
    assert not Ledger().superseded(job_id_for(FIRST))
