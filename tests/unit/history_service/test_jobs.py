"""Which rescore jobs the API calls superseded: every unfinished one but the newest promotion's."""

from __future__ import annotations

import uuid
from typing import Any

from history_service.api import superseded
from mnistream_common.rescore import job_id_of_promotion


def promotion(version: int) -> dict[str, Any]:
    return {"event_id": uuid.uuid4(), "version": version}


def job(of: dict[str, Any], *, finished: bool = False, kind: str = "rescore") -> dict[str, Any]:
    return {
        "job_id": job_id_of_promotion(of["event_id"]),
        "kind": kind,
        "model_version": of["version"],
        "finished": finished,
    }


def test_the_newest_promotions_job_is_current() -> None:
    first, second = promotion(1), promotion(2)
    ledger = [second, first]  # newest first

    assert not superseded(job(second), ledger)
    assert superseded(job(first), ledger)


def test_after_a_rollback_the_old_job_of_the_same_version_stays_superseded() -> None:
    first, second, rollback = promotion(1), promotion(2), promotion(1)
    ledger = [rollback, second, first]

    assert superseded(job(first), ledger), "v1 is champion again, but through a new promotion"
    assert superseded(job(second), ledger)
    assert not superseded(job(rollback), ledger)


def test_finished_jobs_and_evaluations_are_never_superseded() -> None:
    first, second = promotion(1), promotion(2)
    ledger = [second, first]

    assert not superseded(job(first, finished=True), ledger)
    assert not superseded(job(first, kind="candidate"), ledger)
