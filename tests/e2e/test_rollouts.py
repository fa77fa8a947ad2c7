"""Canary and shadow releases end to end: the CLI, every worker holding both models, routing by
digit id, the history's verdict, and a guardrail that ends a bad canary on its own."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
from mnistream_common.ledger import Ended

from tests.e2e.support import (
    Models,
    Predictions,
    history_caught_up,
    ledger,
    mnistream,
    register_onnx,
    upload_all,
    worker_rollouts,
    worker_versions,
)
from tests.helpers import inkless_onnx_model
from tests.polling import eventually
from tests.system import System

pytestmark = pytest.mark.e2e


async def serving_alone(system: System, version: int) -> None:
    """No rollout running, `version` promoted, and every worker serving it."""
    if (await ledger()).rollout is not None:
        mnistream("abort", "--reason", "e2e: a rollout left from before")
    mnistream("promote", str(version), "--force", "--reason", "e2e: the rollouts' champion")

    async def serving() -> bool:
        return await worker_versions(system) == {version}

    await eventually(serving, 60, f"v{version} serving")


@pytest.fixture
async def champion(system: System, models: Models) -> AsyncIterator[int]:
    """The better model serving alone; afterwards no rollout is left running."""
    await serving_alone(system, models.better)
    try:
        yield models.better
    finally:
        if (await ledger()).rollout is not None:
            mnistream("abort", "--reason", "e2e: end of test")


async def aborted_by_the_guardrail(rollout_id: str, within: float) -> Ended:
    """Wait until the ledger has ended the rollout; how it ended, checked to be a guardrail's
    abort."""

    async def aborted() -> bool:
        state = await ledger()
        return state.rollout is None and any(
            str(e.rollout.rollout_id) == rollout_id for e in state.ended
        )

    await eventually(aborted, within, "the guardrail's abort in the ledger")
    ended = next(e for e in (await ledger()).ended if str(e.rollout.rollout_id) == rollout_id)
    assert ended.outcome == "aborted" and ended.by == "history-service guardrail"
    return ended


async def all_workers_apply(system: System) -> str:
    """Wait until every worker holds the running rollout's candidate; its id."""
    rollout = (await ledger()).rollout
    assert rollout is not None
    wanted = (str(rollout.rollout_id), True)

    async def applied() -> bool:
        return set(await worker_rollouts(system)) == {wanted}

    await eventually(applied, 60, "every worker holding the candidate")
    return str(rollout.rollout_id)


async def test_a_canary_answers_its_share_and_each_drawing_by_the_version_its_id_routes_to(
    system: System, models: Models, champion: int, drawings: list[bytes], predictions: Predictions
) -> None:
    started = mnistream(
        "canary", str(models.weak), "--percent", "20", "--force", "--reason", "e2e: canary"
    )
    assert "canary started" in started.stdout, started.stdout
    rollout_id = await all_workers_apply(system)

    images = (drawings * 4)[:1000]
    ids = await upload_all(system.gateway_url, images, concurrency=16)
    await eventually(lambda: not predictions.missing(ids), 120, "every upload answered")

    rollout = (await ledger()).rollout
    assert rollout is not None
    by_weak = 0
    for digit_id in ids:
        live = [p for p in predictions.by_digit[digit_id] if p.kind == "live"]
        assert {p.model.version for p in live} == {
            models.weak if rollout.candidate_answers(digit_id) else champion
        }, digit_id
        assert {str(p.rollout_id) for p in live} == {rollout_id}
        by_weak += live[0].model.version == models.weak
    # The binomial 99.9 % bounds of 1,000 drawings at 20 %: 200 ± 3.29 σ.
    sigma = math.sqrt(1000 * 0.2 * 0.8)
    assert 200 - 3.29 * sigma < by_weak < 200 + 3.29 * sigma, by_weak

    await eventually(history_caught_up, 60, "history caught up")
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=10) as client:
        [current, *_] = (await client.get("/api/rollouts")).json()
    assert (current["rollout_id"], current["state"], current["percent"]) == (
        rollout_id,
        "running",
        20,
    )
    answered = {v["role"]: v["answered"] for v in current["versions"]}
    assert answered == {"candidate": by_weak, "champion": 1000 - by_weak}
    shown = mnistream("rollout", "status").stdout
    assert f"canary {rollout_id}" in shown and "verdict:" in shown, shown

    mnistream("canary", str(models.weak), "--percent", "60", "--reason", "e2e: more")
    changed = (await ledger()).rollout
    assert changed is not None and changed.percent == 60


async def test_after_every_worker_has_the_abort_every_upload_is_read_by_the_champion(
    system: System, models: Models, champion: int, drawings: list[bytes], predictions: Predictions
) -> None:
    mnistream("canary", str(models.weak), "--percent", "50", "--force", "--reason", "e2e: abort")
    await all_workers_apply(system)

    aborted = mnistream("abort", "--reason", "e2e: seen enough")
    assert "aborted" in aborted.stdout

    async def none_apply() -> bool:
        return set(await worker_rollouts(system)) == {None}

    await eventually(none_apply, 30, "every worker back to the champion alone")
    ids = await upload_all(system.gateway_url, drawings[:100], concurrency=16)
    await eventually(lambda: not predictions.missing(ids), 60, "every upload answered")
    assert {(p.model.version, p.rollout_id) for d in ids for p in predictions.by_digit[d]} == {
        (champion, None)
    }
    ended = (await ledger()).ended[-1]
    assert (ended.outcome, ended.reason) == ("aborted", "e2e: seen enough")


async def test_a_shadow_rollout_reads_every_drawing_with_both_and_answers_with_the_champion(
    system: System, models: Models, champion: int, drawings: list[bytes], predictions: Predictions
) -> None:
    mnistream("shadow", str(models.weak), "--force", "--reason", "e2e: shadow")
    rollout_id = await all_workers_apply(system)

    answers = []
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
        for image in drawings[100:160]:
            response = await client.post(
                "/api/predictions",
                params={"wait": 5000},
                files={"image": ("digit.png", image, "image/png")},
            )
            assert response.status_code == 200, response.text
            answers.append(response.json())
    assert {a["prediction"]["model"]["version"] for a in answers} == {champion}
    ids = [uuid.UUID(a["digit_id"]) for a in answers]
    await eventually(
        lambda: not predictions.missing(ids, version=models.weak, kind="shadow"),
        60,
        "every drawing read by the shadow too",
    )
    for digit_id in ids:
        kinds = {(p.kind, p.model.version) for p in predictions.by_digit[digit_id]}
        assert kinds == {("live", champion), ("shadow", models.weak)}, digit_id

    await eventually(history_caught_up, 60, "history caught up")
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=10) as client:
        [current, *_] = (await client.get("/api/rollouts")).json()
    assert (current["rollout_id"], current["mode"], current["compared"]) == (
        rollout_id,
        "shadow",
        60,
    )
    assert current["agreement"] is not None
    shown = mnistream("rollout", "status").stdout
    assert "agreement on the 60 drawings both read" in shown, shown


def true_labels(count: int) -> list[int]:
    """The MNIST labels of the suite's drawings (the first test digits)."""
    from trainer.data import load_split
    from trainer.settings import Settings as TrainerSettings

    labels = load_split(TrainerSettings().mnist_root, train=False).labels[:count]
    return [int(x) for x in np.asarray(labels)]


async def test_a_guardrail_aborts_a_canary_much_worse_on_labelled_drawings(
    system: System,
    models: Models,
    champion: int,
    drawings: list[bytes],
    predictions: Predictions,
    erased_afterwards: list[uuid.UUID],
) -> None:
    mnistream("canary", str(models.weak), "--percent", "50", "--force", "--reason", "e2e: bad")
    rollout_id = await all_workers_apply(system)
    labels = true_labels(len(drawings))

    ids = await upload_all(system.gateway_url, drawings, concurrency=16)
    erased_afterwards.extend(ids)
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
        for digit_id, label in zip(ids, labels, strict=True):
            labeled = await client.post(f"/api/digits/{digit_id}/label", json={"label": label})
            assert labeled.status_code == 202, labeled.text

    ended = await aborted_by_the_guardrail(rollout_id, 90)
    assert ended.reason.startswith("the candidate is significantly worse on user labels"), ended


async def test_a_guardrail_aborts_a_candidate_failing_on_its_drawings_all_answered_by_the_champion(
    system: System,
    champion: int,
    drawings: list[bytes],
    predictions: Predictions,
    erased_afterwards: list[uuid.UUID],
) -> None:
    """A candidate that loads but fails on every drawing with ink: the champion answers its
    share, each failure is a dead letter naming the candidate, the verdict counts them per
    version, and the guardrail aborts the canary with the count in the ledger."""
    broken = register_onnx(inkless_onnx_model(41))
    # The gate reads the labeled drawings with the candidate: it fails on them, and says so.
    labeled = await upload_all(system.gateway_url, drawings[:5], concurrency=5)
    erased_afterwards.extend(labeled)
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
        for digit_id, label in zip(labeled, true_labels(5), strict=True):
            answer = await client.post(f"/api/digits/{digit_id}/label", json={"label": label})
            assert answer.status_code == 202, answer.text
    await eventually(history_caught_up, 60, "the labels stored")
    refused = mnistream("canary", str(broken), "--percent", "50", "--reason", "e2e", check=False)
    assert refused.returncode != 0, refused.stdout
    assert f"v{broken} fails on the labeled drawings" in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr, refused.stderr
    mnistream("canary", str(broken), "--percent", "50", "--force", "--reason", "e2e: broken")
    rollout_id = await all_workers_apply(system)

    ids = await upload_all(system.gateway_url, drawings[:120], concurrency=8)
    erased_afterwards.extend(ids)

    async def answered() -> bool:
        return not predictions.missing(ids)

    await eventually(answered, 60, "an answer for every upload")
    assert {v for d in ids for v in predictions.versions(d, "live")} == {champion}

    ended = await aborted_by_the_guardrail(rollout_id, 60)
    assert ended.reason.startswith("the candidate failed on"), ended
    async with httpx.AsyncClient(base_url=system.history_url, timeout=30) as client:
        verdict = (await client.get(f"/api/rollouts/{rollout_id}")).json()
    figures = {v["role"]: v for v in verdict["versions"]}
    assert figures["candidate"]["answered"] == 0
    assert figures["candidate"]["failed"] > 0 and figures["candidate"]["failure_rate"] == 1.0
    assert figures["champion"]["failed"] == 0


async def test_watch_completes_a_canary_significantly_not_worse_on_labels(
    system: System,
    models: Models,
    drawings: list[bytes],
    erased_afterwards: list[uuid.UUID],
) -> None:
    """The weak model serving, the better one in a canary, every drawing labeled: `rollout
    watch --complete` promotes the candidate once its advantage's interval clears the margin,
    and the ledger records the rollout as completed."""
    await serving_alone(system, models.weak)
    try:
        mnistream("canary", str(models.better), "--percent", "50", "--reason", "e2e: better")
        rollout_id = await all_workers_apply(system)
        labels = true_labels(len(drawings))
        ids = await upload_all(system.gateway_url, drawings, concurrency=16)
        erased_afterwards.extend(ids)
        async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
            for digit_id, label in zip(ids, labels, strict=True):
                labeled = await client.post(f"/api/digits/{digit_id}/label", json={"label": label})
                assert labeled.status_code == 202, labeled.text

        watched = mnistream(
            "rollout",
            "watch",
            "--complete",
            "--min-labels",
            "50",
            "--interval",
            "1",
            "--timeout",
            "120",
        )
        assert "completing it" in watched.stdout and "promoted" in watched.stdout, watched.stdout
        state = await ledger()
        assert state.champion is not None and state.champion.model.version == models.better
        ended = next(e for e in state.ended if str(e.rollout.rollout_id) == rollout_id)
        assert ended.outcome == "completed"
    finally:
        if (await ledger()).rollout is not None:
            mnistream("abort", "--reason", "e2e: end of test")
