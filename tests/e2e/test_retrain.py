"""The closed loop on the real stack: people draw digits in a style MNIST never showed the model
(a seven-segment display's) and label them; `mnistream retrain` snapshots the labels, trains
on MNIST and them, evaluates on the whole history, releases the candidate as a canary through
the promotion gate, survives being killed while the canary runs, and promotes the candidate
once its canary is significantly better on the labels that arrive meanwhile."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import uuid

import numpy as np
import pytest
from mlflow import MlflowClient

from tests.e2e.support import (
    Models,
    history_caught_up,
    label_all,
    ledger,
    mnistream,
    upload_all,
    worker_versions,
)
from tests.helpers import MODEL_NAME, seven_segment_png
from tests.polling import eventually
from tests.stack import require_mlflow
from tests.system import BIN, System

pytestmark = pytest.mark.e2e

# Two epochs where the suite's better model (its champion here) had one: not worse on MNIST.
TRAINING: tuple[str, ...] = (
    "--arch",
    "mlp",
    "--hidden",
    "128",
    "--limit-train",
    "20000",
    "--epochs",
    "2",
)
TRAINING += ("--workers", "0", "--device", "cpu", "--seed", "3")
RELEASE = ("--percent", "50", "--min-labels", "12", "--interval", "1", "--timeout", "300")


async def draw_and_label(
    system: System, rng: np.random.Generator, count: int, erase: list[uuid.UUID]
) -> None:
    labels = [int(d) for d in rng.integers(0, 10, count)]
    ids = await upload_all(system.gateway_url, [seven_segment_png(d, rng) for d in labels])
    erase.extend(ids)
    await label_all(system.gateway_url, ids, labels)


def retrain(*extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "mnistream"), "retrain", *TRAINING, *RELEASE, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


async def test_retrain_learns_a_new_style_from_labels_and_releases_it_through_a_canary(
    system: System, models: Models, erased_afterwards: list[uuid.UUID]
) -> None:
    if (await ledger()).rollout is not None:
        mnistream("abort", "--reason", "e2e: a rollout left from before")
    mnistream("promote", str(models.better), "--force", "--reason", "e2e: retrain's champion")
    rng = np.random.default_rng(11)
    await draw_and_label(system, rng, 120, erased_afterwards)
    await eventually(history_caught_up, 60, "the labels stored")

    nothing = mnistream("retrain", *TRAINING, "--if-new-labels", "100000").stdout
    assert "nothing to do:" in nothing and "fewer than 100000" in nothing, nothing

    first = mnistream("retrain", *TRAINING, "--until", "evaluate").stdout
    dataset = re.search(r"(?:wrote|unchanged:) dataset ([0-9a-f]{64})", first)
    registered = re.search(r"registered v(\d+) \(retrain ([0-9a-f]{16})\)", first)
    assert dataset and registered, first
    version, key = int(registered[1]), registered[2]
    gate = re.search(r"user labels \((\d+)\): candidate ([\d.]+), champion ([\d.]+)", first)
    assert gate, first  # judged on the held-out labeled drawings only
    assert float(gate[2]) > float(gate[3]), gate[0]
    assert "`mnistream promote` would accept it" in first, first

    again = mnistream("retrain", *TRAINING, "--until", "evaluate").stdout
    assert f"unchanged: dataset {dataset[1]}" in again, again
    assert f"trained already: v{version} (retrain {key})" in again, again
    assert "(published before: following it)" in again, again

    crashing = retrain()
    try:

        async def canary_running() -> bool:
            running = (await ledger()).rollout
            return running is not None and running.started.candidate.version == version

        await eventually(canary_running, 180, f"the canary of v{version}")
    finally:
        crashing.send_signal(signal.SIGKILL)  # a crash while the canary runs
        crashing.communicate(timeout=30)
    started = (await ledger()).rollout
    assert started is not None and started.started.reason.startswith(f"retrain {key}: dataset ")

    resumed = retrain()
    try:
        for _ in range(20):  # live drawings of the style, labeled as people label them
            if resumed.poll() is not None:
                break
            await draw_and_label(system, rng, 10, erased_afterwards)
            await asyncio.sleep(1)
        output, _ = resumed.communicate(timeout=120)
    finally:
        if resumed.poll() is None:
            resumed.kill()
    assert resumed.returncode == 0, output
    assert f"resuming: the canary of v{version} (retrain {key})" in output, output
    assert "completing it" in output and "promoted" in output, output

    state = await ledger()
    assert state.champion is not None and state.champion.model.version == version
    ended = next(e for e in state.ended if e.rollout.rollout_id == started.rollout_id)
    assert ended.outcome == "completed"

    async def serving() -> bool:
        return await worker_versions(system) == {version}

    await eventually(serving, 60, f"every worker serving v{version}")

    client = MlflowClient(require_mlflow())
    tags = client.get_model_version(MODEL_NAME, str(version)).tags
    assert tags["retrain_step"] == "promoted" and tags["retrain_key"] == key
    assert tags["dataset_version"] == dataset[1]
    inputs = client.get_run(tags["run_id"]).inputs
    assert inputs is not None, "the run records no inputs"
    assert [d.dataset.name for d in inputs.dataset_inputs] == [dataset[1]]
