"""Helpers for end-to-end tests: the CLI as a user runs it, uploads, collected predictions."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from mnistream_common.events import DigitPredicted, InvalidEventError
from mnistream_common.groups import group_status
from mnistream_common.kafka import client_options, read_ledger_entries
from mnistream_common.ledger import LedgerState, fold
from mnistream_common.topics import DIGITS_PREDICTED, Groups, TopicSpec
from mnistream_system.canvas import render_canvas_png

from tests.stack import require_kafka
from tests.system import BIN, ROOT, System


def register_onnx(onnx_bytes: bytes, architecture: str = "linear") -> int:
    """Register hand-made ONNX bytes as a new model version the way the trainer registers its
    own (logged in a run, read back from MinIO, tagged); its version."""
    import mlflow
    from mnistream_common.storage import sha256_hex
    from trainer.export import INPUT_SPEC, OUTPUT_SPEC
    from trainer.settings import Settings as TrainerSettings
    from trainer.tracking import VersionTags, log_onnx_model, register_version, verify_stored_onnx

    settings = TrainerSettings()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(settings.mlflow_experiment)
    with mlflow.start_run() as run:
        logged = log_onnx_model(onnx_bytes, settings.artifacts_bucket)
        sha256 = sha256_hex(onnx_bytes)
        verify_stored_onnx(settings, logged.onnx_uri, sha256)
        tags = VersionTags(
            test_accuracy=0.0,
            onnx_sha256=sha256,
            onnx_uri=str(logged.onnx_uri),
            architecture=architecture,
            run_id=run.info.run_id,
            input_spec=INPUT_SPEC,
            output_spec=OUTPUT_SPEC,
        )
        return register_version(settings.registered_model_name, logged.model_uri, tags)


@dataclass(frozen=True)
class Models:
    """Two registered versions: the weak first model and a better one."""

    weak: int
    better: int


def mnistream(
    *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the `mnistream` CLI as a user would (with `env` on top); returns its output."""
    result = subprocess.run(
        [str(BIN / "mnistream"), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"mnistream {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        )
    return result


@dataclass
class Predictions:
    """Every prediction published since the collector started, by digit id."""

    by_digit: dict[uuid.UUID, list[DigitPredicted]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def versions(self, digit_id: uuid.UUID, kind: str | None = None) -> set[int]:
        """Model versions that predicted `digit_id` (optionally of one kind)."""
        return {p.model.version for p in self.by_digit[digit_id] if kind in (None, p.kind)}

    def missing(
        self, ids: list[uuid.UUID], *, version: int | None = None, kind: str = "live"
    ) -> list[uuid.UUID]:
        """Ids without a prediction of `kind` (by `version`, when given)."""
        return [
            d
            for d in ids
            if not any(
                p.kind == kind and (version is None or p.model.version == version)
                for p in self.by_digit[d]
            )
        ]


async def upload_all(
    gateway_url: str, images: list[bytes], *, concurrency: int = 16, wait_ms: int = 0
) -> list[uuid.UUID]:
    """Upload drawings (multipart); the ids answered 202 or 200. Any other answer fails."""
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30.0) as client:

        async def one(image: bytes) -> uuid.UUID:
            async with gate:
                response = await client.post(
                    "/api/predictions",
                    params={"wait": wait_ms} if wait_ms else None,
                    files={"image": ("digit.png", image, "image/png")},
                )
            assert response.status_code in (200, 202), response.text
            return uuid.UUID(response.json()["digit_id"])

        return list(await asyncio.gather(*(one(image) for image in images)))


async def topic_records(topic: TopicSpec, key: bytes) -> list[bytes | None]:
    """The value of every record of `topic` with this key, from the beginning to the end
    offsets seen at the start, in each partition's order (a tombstone's value is None)."""
    consumer = AIOKafkaConsumer(**client_options(require_kafka()), enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        for tp, offset in (await consumer.beginning_offsets(partitions)).items():
            consumer.seek(tp, offset)
        values: list[bytes | None] = []
        for tp in partitions:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                values += [r.value for r in batch.get(tp, []) if r.key == key]
        return values
    finally:
        await consumer.stop()


async def upload_predicted(gateway_url: str, image: bytes, wait_ms: int = 5000) -> uuid.UUID:
    """Upload one drawing and wait for its prediction: the id, once answered 200 `predicted`
    (a 202, any other status or an answer without a prediction fails)."""
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30.0) as client:
        response = await client.post(
            "/api/predictions",
            params={"wait": wait_ms},
            files={"image": ("digit.png", image, "image/png")},
        )
    assert response.status_code == 200, (response.status_code, response.text)
    body = response.json()
    assert body["status"] == "predicted" and body["prediction"]["digit_id"] == body["digit_id"]
    return uuid.UUID(body["digit_id"])


async def history_caught_up() -> bool:
    """The history group has read everything (lag 0) and has members."""
    [status] = await group_status(require_kafka(), [Groups.HISTORY])
    return bool(status.members) and sum(status.lag.values()) == 0


async def everything_settled() -> bool:
    """No promotion left to plan, no rescore chunk left to score, and history has read it all.

    Rescores run on their own: a job planned late (its planner waits for history-service) keeps
    publishing predictions after the uploads are stored, so a snapshot of the tables is only
    complete once the rescore groups have no lag either.
    """
    *rescore, history = await group_status(
        require_kafka(), [Groups.RESCORE_PLANNER, Groups.RESCORE, Groups.HISTORY]
    )
    lagging = any(sum(s.lag.values()) for s in (*rescore, history))
    return bool(history.members) and not lagging


def stack_component(action: str, name: str) -> None:
    """Stop or start one component of the stack (infra/stack.sh stop|start NAME)."""
    done = subprocess.run(
        [str(ROOT / "infra" / "stack.sh"), action, name],
        timeout=180,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise AssertionError(f"infra/stack.sh {action} {name} failed:\n{done.stderr[-3000:]}")


@asynccontextmanager
async def tail(topic: TopicSpec) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer without a group on every partition of `topic`, from its current end."""
    consumer = AIOKafkaConsumer(
        **client_options(require_kafka()),
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)  # resolve the end now, before the test produces
        yield consumer
    finally:
        await consumer.stop()


@asynccontextmanager
async def collect_predictions() -> AsyncIterator[Predictions]:
    """Every `digits.predicted` event from now on (a consumer without a group)."""
    collected = Predictions()
    async with tail(DIGITS_PREDICTED) as consumer:

        async def collect() -> None:
            async for record in consumer:
                try:
                    event = DigitPredicted.from_bytes(record.value or b"")
                except InvalidEventError:
                    continue
                collected.by_digit[event.digit_id].append(event)

        task = asyncio.create_task(collect())
        try:
            yield collected
        finally:
            task.cancel()


async def worker_states(system: System) -> list[dict[str, Any]]:
    """The /readyz answer of each running inference worker."""
    states = []
    async with httpx.AsyncClient(timeout=5) as client:
        for name, service in system.services.items():
            if name.startswith("inference-") and service.process and service.process.poll() is None:
                port = service.env["INFERENCE_HTTP_PORT"]
                states.append((await client.get(f"http://127.0.0.1:{port}/readyz")).json())
    return states


async def worker_versions(system: System) -> set[int]:
    """The model version each running inference worker serves (its /readyz)."""
    return {state["model"]["version"] for state in await worker_states(system)}


async def worker_rollouts(system: System) -> list[tuple[str, bool] | None]:
    """The rollout each running inference worker applies: (id, candidate loaded), or None."""
    return [
        None
        if s["rollout"] is None
        else (s["rollout"]["rollout_id"], s["rollout"]["candidate_loaded"])
        for s in await worker_states(system)
    ]


def canvas_drawings(count: int) -> list[bytes]:
    """The first `count` MNIST test digits rendered like browser canvas drawings (280×280 PNG)."""
    from trainer.data import load_split
    from trainer.settings import Settings as TrainerSettings

    test = load_split(TrainerSettings().mnist_root, train=False)
    images = test.images[:count].numpy().astype(np.float32) / 255.0
    return [render_canvas_png(image) for image in images]


async def label_all(gateway_url: str, ids: list[uuid.UUID], labels: list[int]) -> None:
    """Label drawings as a person does, through the gateway; any answer but 202 fails."""
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        for digit_id, label in zip(ids, labels, strict=True):
            answer = await client.post(f"/api/digits/{digit_id}/label", json={"label": label})
            assert answer.status_code == 202, answer.text


async def ledger() -> LedgerState:
    """The promotion ledger's state now, folded as every worker folds it."""
    return fold(await read_ledger_entries(require_kafka()))
