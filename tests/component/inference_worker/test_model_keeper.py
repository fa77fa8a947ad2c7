"""Hot swapping: the keeper loads only the newest promotion, never swaps in a model that fails its
checks (the old one keeps serving), retries one that cannot be fetched yet, and swaps between
batches, so a batch in progress finishes with the model it started with."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from inference_worker.handlers import BatchHandler
from inference_worker.keeper import ModelKeeper
from inference_worker.metrics import WorkerMetrics
from mnistream_common.consume import Delivery, parse_records
from mnistream_common.events import (
    DigitPredicted,
    DigitSubmitted,
    ModelPromoted,
    ModelRef,
    ModelRollout,
)
from mnistream_serving.loader import ModelUnavailableError
from mnistream_serving.model import LoadedModel, ModelRejectedError, RuntimeOptions, build_model

from tests.helpers import promotion, records, submitted, tiny_onnx_model
from tests.polling import eventually

OPTIONS = RuntimeOptions(1, False, 2)
MODELS = {version: tiny_onnx_model(100 + version) for version in range(1, 6)}


@dataclass
class FakeModelStore:
    """Loads models by version, or fails the way storage or a bad model would."""

    rejected: set[int] = field(default_factory=set)
    unavailable_times: dict[int, int] = field(default_factory=dict)
    loads: list[int] = field(default_factory=list)

    async def load(self, model: ModelRef, onnx_uri: str) -> LoadedModel:
        version = model.version
        self.loads.append(version)
        if version in self.rejected:
            raise ModelRejectedError(f"sha256 mismatch for mnist-digits v{version}")
        if self.unavailable_times.get(version, 0) > 0:
            self.unavailable_times[version] -= 1
            raise ModelUnavailableError("cannot reach object storage")
        return build_model(model, MODELS[version], OPTIONS)


@dataclass
class Swaps:
    """What the worker was told on each swap: (new version, previous version)."""

    seen: list[tuple[int, int | None]] = field(default_factory=list)

    async def __call__(self, model: LoadedModel, previous: LoadedModel | None) -> None:
        self.seen.append((model.ref.version, previous.ref.version if previous else None))


@dataclass
class Running:
    keeper: ModelKeeper
    store: FakeModelStore
    swaps: Swaps

    def promote(self, version: int, offset: int) -> ModelPromoted:
        event = promotion(MODELS[version], version)
        self.keeper.promoted(event, offset)
        return event

    def serving(self) -> int | None:
        ref = self.keeper.serving
        return ref.version if ref else None

    async def until_serving(self, version: int) -> None:
        await self.until(lambda: self.serving() == version, f"v{version} serving")

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        async def check() -> bool:
            return condition()

        await eventually(check, 5.0, f"waiting for {what}", interval=0.002)


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    store, swaps = FakeModelStore(), Swaps()
    keeper = ModelKeeper(store.load, swaps, retry_seconds=0.01)
    task = asyncio.create_task(keeper.run())
    try:
        yield Running(keeper, store, swaps)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_only_the_newest_promotion_in_the_ledger_is_loaded(running: Running) -> None:
    running.keeper.ledger_end_at_start = 4
    for offset, version in enumerate([1, 2, 3, 4]):
        running.promote(version, offset)
        await asyncio.sleep(0)  # let the keeper see each one as it is read

    await running.until_serving(4)

    assert running.store.loads == [4]
    assert running.swaps.seen == [(4, None)]


async def test_a_promotion_after_start_replaces_the_model(running: Running) -> None:
    running.keeper.ledger_end_at_start = 1
    running.promote(1, 0)
    await running.until_serving(1)

    running.promote(2, 1)
    await running.until_serving(2)

    assert running.store.loads == [1, 2]
    assert running.swaps.seen == [(1, None), (2, 1)]
    assert running.keeper.last_error is None


async def test_a_rejected_model_is_never_swapped_in_and_the_old_keeps_serving(
    running: Running,
) -> None:
    running.store.rejected.add(2)
    running.promote(1, 0)
    await running.until_serving(1)

    running.promote(2, 1)
    await running.until(lambda: running.keeper.last_error is not None, "the rejection")

    assert running.serving() == 1
    assert running.keeper.last_error == "v2 rejected: sha256 mismatch for mnist-digits v2"

    weighed = running.keeper.decisions
    running.promote(2, 2)  # the same model promoted again is not tried again
    await running.until(lambda: running.keeper.decisions > weighed, "the keeper weighing it")
    assert running.store.loads == [1, 2]
    running.promote(3, 3)
    await running.until_serving(3)
    assert running.store.loads == [1, 2, 3]
    assert running.swaps.seen == [(1, None), (3, 1)]


async def test_an_unavailable_model_is_retried_until_it_loads(running: Running) -> None:
    running.store.unavailable_times[1] = 3

    running.promote(1, 0)
    await running.until_serving(1)

    assert running.store.loads == [1, 1, 1, 1]
    assert running.keeper.last_error is None


async def test_while_retrying_a_newer_promotion_wins(running: Running) -> None:
    running.store.unavailable_times[1] = 1_000_000
    running.promote(1, 0)
    await running.until(lambda: len(running.store.loads) >= 2, "a retry")

    running.promote(2, 1)
    await running.until_serving(2)

    assert running.swaps.seen == [(2, None)]


async def test_a_batch_in_progress_keeps_the_model_it_started_with(running: Running) -> None:
    running.promote(1, 0)
    await running.until_serving(1)
    gate = asyncio.Event()
    held = HeldPublisher(gate)
    handler = BatchHandler("w", held, WorkerMetrics())

    # What the worker's subscriber does: read the current model once, then run the batch.
    first = asyncio.create_task(handler(_current(running), drawings(3)))
    await running.until(lambda: held.waiting, "the batch to be publishing")
    running.promote(2, 1)
    await running.until_serving(2)
    gate.set()
    await first
    await handler(_current(running), drawings(1))

    versions = [DigitPredicted.from_bytes(m).model.version for m in held.bodies]
    assert versions == [1, 1, 1, 2]


def drawings(count: int) -> list[Delivery[DigitSubmitted]]:
    deliveries, _ = parse_records(records([submitted().to_bytes()] * count), DigitSubmitted)
    return deliveries


def _current(running: Running) -> LoadedModel:
    model = running.keeper.current
    assert model is not None
    return model


@dataclass
class HeldPublisher:
    """A publisher whose acknowledgements wait for a gate, like a slow Kafka."""

    gate: asyncio.Event
    bodies: list[bytes] = field(default_factory=list)
    waiting: bool = False

    async def publish(
        self, message: Any, *, key: bytes | None = None, headers: dict[str, str] | None = None
    ) -> None:
        self.waiting = True
        await self.gate.wait()
        self.bodies.append(message)


async def test_a_restarted_worker_serves_the_newest_champion_that_loads(running: Running) -> None:
    """Every worker restarted after an unloadable promotion (its object gone): the ledger's
    newest is rejected, and the one before it serves, said so in `fallback`."""
    running.store.rejected.update({3, 2})
    running.keeper.ledger_end_at_start = 3  # a restart: the ledger already holds three
    for offset, version in enumerate([1, 2, 3]):
        running.promote(version, offset)
    await running.until_serving(1)

    assert running.store.loads == [3, 2, 1]
    assert running.keeper.fallback == (
        "v3, the ledger's newest promotion, cannot be loaded; serving v1, the newest champion "
        "that loads"
    )
    weighed = running.keeper.decisions
    running.promote(1, 3)  # the serving champion promoted again ends the fallback, no load
    await running.until(lambda: running.keeper.decisions > weighed, "the keeper weighing it")
    assert running.keeper.fallback is None
    assert running.store.loads == [3, 2, 1]


async def test_a_rejected_promotion_while_serving_is_reported_as_a_fallback(
    running: Running,
) -> None:
    running.store.rejected.add(2)
    running.promote(1, 0)
    await running.until_serving(1)
    running.promote(2, 1)
    await running.until(lambda: running.keeper.fallback is not None, "the fallback")
    assert running.serving() == 1
    assert running.store.loads == [1, 2]


# ---------------------------------------------------------------- rollouts


def rollout_step(
    version: int,
    action: str = "started",
    *,
    rollout_id: uuid.UUID | None = None,
    mode: str = "canary",
    percent: float = 20.0,
) -> ModelRollout:
    candidate = promotion(MODELS[version], version)
    return ModelRollout(
        rollout_id=rollout_id or uuid.uuid4(),
        action=action,  # type: ignore[arg-type]
        mode=mode,  # type: ignore[arg-type]
        candidate=candidate.model,
        onnx_uri=candidate.onnx_uri,
        architecture="linear",
        champion_version=1,
        percent=100.0 if mode == "shadow" else percent,
        requested_by="tests@localhost",
    )


async def test_a_rollout_loads_its_candidate_beside_the_champion(running: Running) -> None:
    running.promote(1, 0)
    await running.until_serving(1)
    start = rollout_step(2)

    running.keeper.rollout_step(start, 1)
    await running.until(lambda: running.keeper.release is not None, "the candidate")

    release = running.keeper.release
    assert release is not None
    assert (release.rollout.rollout_id, release.candidate.ref.version) == (start.rollout_id, 2)
    assert running.serving() == 1 and running.swaps.seen == [(1, None)]


async def test_a_new_share_and_an_abort_apply_at_once_without_a_load(running: Running) -> None:
    running.promote(1, 0)
    start = rollout_step(2)
    running.keeper.rollout_step(start, 1)
    await running.until(lambda: running.keeper.release is not None, "the candidate")
    loads = list(running.store.loads)

    running.keeper.rollout_step(
        rollout_step(2, "changed", rollout_id=start.rollout_id, percent=70), 2
    )
    release = running.keeper.release
    assert release is not None and release.rollout.percent == 70  # no await: the next batch
    running.keeper.rollout_step(rollout_step(2, "aborted", rollout_id=start.rollout_id), 3)
    assert running.keeper.release is None
    assert running.store.loads == loads


async def test_a_candidate_that_fails_its_checks_leaves_the_champion_alone(
    running: Running,
) -> None:
    running.store.rejected.add(2)
    running.promote(1, 0)
    await running.until_serving(1)

    running.keeper.rollout_step(rollout_step(2), 1)
    await running.until(lambda: running.keeper.candidate_error is not None, "the refusal")

    assert running.keeper.release is None and running.serving() == 1
    assert "candidate v2 rejected" in (running.keeper.candidate_error or "")


async def test_a_restarted_worker_resumes_the_rollout_from_the_ledger(running: Running) -> None:
    """The ledger ends with a rollout step: the champion and the candidate both load, and only
    they (the ledger's older promotions are not loaded)."""
    running.keeper.ledger_end_at_start = 3
    running.promote(3, 0)
    running.promote(1, 1)
    running.keeper.rollout_step(rollout_step(2, percent=40), 2)

    await running.until(lambda: running.keeper.release is not None, "the candidate")

    assert running.serving() == 1
    assert running.store.loads == [1, 2]
    release = running.keeper.release
    assert release is not None and release.rollout.percent == 40


async def test_promoting_the_candidate_ends_the_rollout_and_swaps_it_in(running: Running) -> None:
    running.promote(1, 0)
    running.keeper.rollout_step(rollout_step(2), 1)
    await running.until(lambda: running.keeper.release is not None, "the candidate")

    loads = list(running.store.loads)
    running.promote(2, 2)
    assert running.keeper.release is None  # the champion answers everything until the swap
    await running.until_serving(2)
    assert running.store.loads == loads  # the candidate held is swapped in, not loaded again


async def test_a_worker_restarted_into_a_rollout_consumes_only_once_it_holds_the_candidate() -> (
    None
):
    """Ready (consuming starts) after the candidate is in place: a restarted worker answering
    the candidate's share with the champion meanwhile would break the routing by digit id."""
    store = FakeModelStore()
    seen: list[bool] = []
    keeper: ModelKeeper

    async def on_ready() -> None:
        seen.append(keeper.release is not None)

    keeper = ModelKeeper(store.load, Swaps(), retry_seconds=0.01, on_ready=on_ready)
    task = asyncio.create_task(keeper.run())
    try:
        keeper.ledger_end_at_start = 2
        keeper.promoted(promotion(MODELS[1], 1), 0)
        keeper.rollout_step(rollout_step(2), 1)
        await eventually(lambda: asyncio.sleep(0, bool(seen)), 5.0, "ready", interval=0.002)
        assert seen == [True] and store.loads == [1, 2]
    finally:
        task.cancel()


async def test_a_candidate_not_loadable_yet_does_not_hold_up_serving() -> None:
    store = FakeModelStore(unavailable_times={2: 1_000_000})
    ready = asyncio.Event()

    async def on_ready() -> None:
        ready.set()

    keeper = ModelKeeper(store.load, Swaps(), retry_seconds=0.01, on_ready=on_ready)
    task = asyncio.create_task(keeper.run())
    try:
        keeper.ledger_end_at_start = 2
        keeper.promoted(promotion(MODELS[1], 1), 0)
        keeper.rollout_step(rollout_step(2), 1)
        await asyncio.wait_for(ready.wait(), 5.0)
        assert keeper.release is None and "unavailable" in (keeper.candidate_error or "")
    finally:
        task.cancel()


async def test_a_restarted_worker_consumes_before_it_reports_serving_an_earlier_champion() -> None:
    """What /readyz reports as the fallback is already serving: consuming started first."""
    store = FakeModelStore(rejected={2})
    fallback_when_ready: list[str | None] = []
    keeper: ModelKeeper

    async def on_ready() -> None:
        fallback_when_ready.append(keeper.fallback)

    keeper = ModelKeeper(store.load, Swaps(), retry_seconds=0.01, on_ready=on_ready)
    task = asyncio.create_task(keeper.run())
    try:
        keeper.ledger_end_at_start = 2
        keeper.promoted(promotion(MODELS[1], 1), 0)
        keeper.promoted(promotion(MODELS[2], 2), 1)
        await eventually(lambda: asyncio.sleep(0, keeper.fallback is not None), 5.0, "fallback")
        assert fallback_when_ready == [None]
    finally:
        task.cancel()
