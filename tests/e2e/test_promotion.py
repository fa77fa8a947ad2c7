"""Promotion end to end: the CLI, hot swap in every worker, rescoring of the whole history."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from mnistream_common.kafka import read_ledger
from mnistream_common.rescore import job_id_for
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.e2e.support import (
    Models,
    Predictions,
    mnistream,
    upload_all,
    worker_versions,
)
from tests.polling import eventually
from tests.stack import require_kafka, require_postgres
from tests.system import ADMIN_TOKEN, System

TOKEN = {"ADMIN_TOKEN": ADMIN_TOKEN}

pytestmark = pytest.mark.e2e


async def drawings_without(version: int) -> int:
    """Stored drawings that have no prediction by `version`."""
    engine = create_async_engine(require_postgres())
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                text(
                    "SELECT count(*) FROM drawings d WHERE NOT EXISTS (SELECT 1 FROM predictions p "
                    "WHERE p.digit_id = d.digit_id AND p.model_version = :v)"
                ),
                {"v": version},
            )
            return int(result.scalar_one())
    finally:
        await engine.dispose()


async def latest_job(history_url: str, version: int) -> dict[str, object] | None:
    """The newest rescore job for `version`."""
    async with httpx.AsyncClient(base_url=history_url, timeout=10) as client:
        jobs = (await client.get("/api/rescore-jobs")).json()
    mine = [j for j in jobs if j["model_version"] == version and j["kind"] == "rescore"]
    return mine[0] if mine else None


async def test_promotion_rescores_every_stored_drawing_without_restarts(
    system: System, models: Models, drawings: list[bytes], predictions: Predictions
) -> None:
    mnistream("promote", str(models.weak), "--force", "--reason", "e2e: start weak")
    await eventually(lambda: worker_versions(system), 30, "workers up")
    pids = {name: s.process.pid for name, s in system.services.items() if s.process}
    ids = await upload_all(system.gateway_url, drawings[:200], concurrency=16)
    await eventually(
        lambda: not predictions.missing(ids, version=models.weak), 60, "weak reads all"
    )

    # No wait for history to store the uploads: the planner waits for it to catch up before it
    # lists the stored drawings (on a long-lived stack, history can still be writing the
    # previous job's predictions when the workers have read the uploads).
    promoted = mnistream("promote", str(models.better), "--reason", "e2e: better model")
    assert "promoted" in promoted.stdout

    async def everything_rescored() -> bool:
        return await drawings_without(models.better) == 0

    await eventually(everything_rescored, 180, "every stored drawing read by the new model")

    async def job_finished() -> bool:
        # Drawings read live by this version earlier in the session have its prediction already,
        # so the job can still be on its last chunks when no drawing lacks one: wait for it too.
        job = await latest_job(system.history_url, models.better)
        return job is not None and bool(job["finished"])

    await eventually(job_finished, 60, "the rescore job reports finished")
    assert await worker_versions(system) == {models.better}
    after = await upload_all(system.gateway_url, drawings[200:220], wait_ms=5000)
    await eventually(
        lambda: not predictions.missing(after, version=models.better),
        30,
        "new live predictions by the new version",
    )
    assert pids == {name: s.process.pid for name, s in system.services.items() if s.process}, (
        "no service may restart for a promotion"
    )


async def test_rollback_brings_the_old_champion_back_everywhere(
    system: System, models: Models, drawings: list[bytes], predictions: Predictions
) -> None:
    mnistream("promote", str(models.weak), "--force", "--reason", "e2e: weak")
    mnistream("promote", str(models.better), "--reason", "e2e: better")

    async def serving(version: int) -> bool:
        return await worker_versions(system) == {version}

    await eventually(lambda: serving(models.better), 30, "better serving")
    rolled = mnistream("rollback", "--reason", "e2e: rollback")
    assert f"to v{models.weak}" in rolled.stdout
    await eventually(lambda: serving(models.weak), 30, "old champion serving again")
    ids = await upload_all(system.gateway_url, drawings[30:40], wait_ms=5000)
    await eventually(
        lambda: not predictions.missing(ids, version=models.weak), 30, "live by the old champion"
    )


def test_the_gate_refuses_a_worse_model_unless_forced(system: System, models: Models) -> None:
    mnistream("promote", str(models.better), "--force", "--reason", "e2e: better first")
    refused = mnistream("promote", str(models.weak), check=False)
    assert refused.returncode == 1
    assert "refused" in refused.stdout and "below the champion's" in refused.stdout
    assert "--force" in refused.stdout
    forced = mnistream("promote", str(models.weak), "--force", "--reason", "e2e: forced")
    assert forced.returncode == 0 and "promoted" in forced.stdout


async def test_the_gate_refuses_a_model_that_misreads_what_the_champion_reads_right(
    system: System, models: Models, drawings: list[bytes]
) -> None:
    """Labels that agree with the better model, then the weak one proposed over it: the gate
    counts the labeled drawings the champion reads right and the candidate misreads, and with a
    zero tolerance refuses on them alone. The drawings are erased afterwards, so their labels do
    not weigh on the other tests' gates."""
    mnistream("promote", str(models.better), "--force", "--reason", "e2e: champion to flip from")

    async def better_serving() -> bool:
        return await worker_versions(system) == {models.better}

    await eventually(better_serving, 30, "better serving")
    read: dict[uuid.UUID, int] = {}
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
        for image in drawings[40:70]:
            answer = (
                await client.post(
                    "/api/predictions",
                    params={"wait": 5000},
                    files={"image": ("digit.png", image, "image/png")},
                )
            ).json()
            assert answer["prediction"]["model"]["version"] == models.better, answer
            read[uuid.UUID(answer["digit_id"])] = answer["prediction"]["predicted_digit"]
        for digit_id, digit in read.items():
            labeled = await client.post(f"/api/digits/{digit_id}/label", json={"label": digit})
            assert labeled.status_code == 202, labeled.text
    try:
        await eventually(lambda: labels_stored(set(read)), 60, "the labels stored")
        strict = {"MAX_NEGATIVE_FLIP_SHARE": "0", "NEGATIVE_FLIP_MIN_LABELS": "5"}
        refused = mnistream("promote", str(models.weak), check=False, env=strict)
        assert refused.returncode == 1, refused.stdout
        found = re.search(r"the candidate misreads: (\d+) of (\d+)", refused.stdout)
        assert found, refused.stdout
        broken, right = int(found[1]), int(found[2])
        assert right >= len(read) and broken >= 1, refused.stdout
        assert f"it misreads {broken} of the {right} user-labeled drawings" in refused.stdout
    finally:
        ids = [str(d) for d in read]
        mnistream("erase", *ids, "--yes", "--reason", "e2e: labels for the flip gate", env=TOKEN)


async def labels_stored(ids: set[uuid.UUID]) -> bool:
    engine = create_async_engine(require_postgres())
    try:
        async with engine.connect() as conn:
            found = await conn.execute(
                text("SELECT count(*) FROM labels WHERE digit_id = ANY(:ids)"), {"ids": list(ids)}
            )
            return int(found.scalar_one()) == len(ids)
    finally:
        await engine.dispose()


async def test_a_killed_rescore_worker_still_completes_the_job(
    system: System, models: Models, drawings: list[bytes]
) -> None:
    await upload_all(system.gateway_url, [drawings[i % 300] for i in range(400)], concurrency=16)
    mnistream("promote", str(models.weak), "--force", "--reason", "e2e: weak")
    await eventually(lambda: _job_done(system, models.weak), 180, "weak rescore done")
    mnistream("promote", str(models.better), "--reason", "e2e: better, then a crash")
    [*_, promotion] = await read_ledger(require_kafka())
    job_url = f"{system.history_url}/api/rescore-jobs/{job_id_for(promotion)}"

    async def job() -> dict[str, Any] | None:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(job_url)
        return response.json() if response.status_code == 200 else None

    async def under_way() -> bool:
        now = await job()
        assert not (now and now["finished"]), "the job finished before the kill: not mid-job"
        return bool(now and now["done"] > 0)

    await eventually(under_way, 60, "this promotion's rescore job under way")
    system.services["rescore-0"].kill()  # kill -9 mid-job
    killed_at = await job()
    assert killed_at is not None and 0 < killed_at["done"] < killed_at["total"], killed_at

    async def finished() -> bool:
        now = await job()
        return bool(now and now["finished"])

    await eventually(finished, 180, "the job completes without the killed worker")
    assert await drawings_without(models.better) == 0
    done = await job()
    assert done is not None and done["done"] == done["total"], done
    system.restart("rescore-0")


async def _job_done(system: System, version: int) -> bool:
    job = await latest_job(system.history_url, version)
    return bool(job and job["finished"])


def test_models_lists_versions_and_the_champion(system: System, models: Models) -> None:
    listing = mnistream("models")
    assert str(models.weak) in listing.stdout and str(models.better) in listing.stdout
    assert "champion" in listing.stdout
    status = mnistream("status")
    assert "champion:" in status.stdout and "inference" in status.stdout


async def test_evaluate_reads_every_drawing_with_a_candidate_and_promotes_nothing(
    system: System, models: Models, drawings: list[bytes]
) -> None:
    mnistream("promote", str(models.weak), "--force", "--reason", "e2e: champion to compare with")

    async def serving_weak() -> bool:
        return await worker_versions(system) == {models.weak}

    await eventually(serving_weak, 30, "the weak champion serving")
    await upload_all(system.gateway_url, drawings[40:60], wait_ms=5000)
    ledger_before = await read_ledger(require_kafka())
    rescored = f"{system.history_url}/api/rescore-jobs/{job_id_for(ledger_before[-1])}"

    async def weak_everywhere() -> bool:  # the champion's rescore: every drawing has its answer
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(rescored)
        return response.status_code == 200 and bool(response.json()["finished"])

    await eventually(weak_everywhere, 180, "the champion's rescore finished")

    evaluated = mnistream("evaluate", str(models.better))

    pattern = r"evaluating v(\d+) on (\d+) drawings \(job ([0-9a-f-]+)\)"
    started = re.search(pattern, evaluated.stdout)
    assert started, evaluated.stdout
    assert int(started[1]) == models.better
    stored, job_id = int(started[2]), started[3]
    async with httpx.AsyncClient(base_url=system.history_url, timeout=10) as client:
        job = (await client.get(f"/api/rescore-jobs/{job_id}")).json()
        report = (
            await client.get(f"/api/models/{models.better}", params={"against": models.weak})
        ).json()
    assert job["kind"] == "candidate" and job["finished"], job
    assert job["done"] == job["total"] == stored, job
    summary = f"v{models.better} vs v{models.weak}: {report['compared']} compared"
    assert summary in evaluated.stdout, evaluated.stdout
    assert report["compared"] == stored, "every stored drawing has both versions' answers"
    # The gate's verdict, as `promote` would give it (the better model passes it here).
    assert "`mnistream promote` would accept it" in evaluated.stdout, evaluated.stdout
    # A candidate is never promoted: same ledger, same model in every worker.
    assert len(await read_ledger(require_kafka())) == len(ledger_before)
    assert await worker_versions(system) == {models.weak}


async def _sql(statement: str, **params: Any) -> None:
    engine = create_async_engine(require_postgres())
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement), params)
    finally:
        await engine.dispose()


async def test_an_evaluation_with_a_drawing_no_model_can_read_finishes_and_names_it(
    system: System, models: Models, drawings: list[bytes]
) -> None:
    """A stored drawing whose image object is gone (and whose input was never kept): the job
    counts it as done with the reason, finishes, and `mnistream evaluate` lists it."""
    await upload_all(system.gateway_url, drawings[60:65], wait_ms=5000)
    lost = uuid.uuid4()
    await _sql(
        "INSERT INTO drawings (digit_id, submitted_at, media_type, width, height, size_bytes, "
        "image_bucket, image_key, image_sha256, client_source, event_id) VALUES (:d, now(), "
        "'image/png', 280, 280, 100, 'drawings', :key, :sha, 'e2e', :e)",
        d=lost,
        key=f"gone/{lost}.png",
        sha="0" * 64,
        e=uuid.uuid4(),
    )
    try:
        evaluated = mnistream("evaluate", str(models.better), "--timeout", "180")
    finally:
        await _sql("DELETE FROM drawings WHERE digit_id = :d", d=lost)

    started = re.search(r"evaluating v\d+ on (\d+) drawings \(job ([0-9a-f-]+)\)", evaluated.stdout)
    assert started, evaluated.stdout
    stored, job_id = int(started[1]), started[2]
    async with httpx.AsyncClient(base_url=system.history_url, timeout=10) as client:
        job = (await client.get(f"/api/rescore-jobs/{job_id}")).json()
    assert job["finished"] and job["done"] == job["total"] == stored, job
    assert job["skipped"] == 1, job
    assert job["skipped_drawings"] == [
        {"digit_id": str(lost), "reason": "its image object is missing"}
    ], job
    assert f"1 of {stored} drawings could not be read and were skipped" in evaluated.stdout
    assert f"{lost}: its image object is missing" in evaluated.stdout
