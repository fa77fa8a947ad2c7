"""End-to-end fixtures: registered models, the running services, and ways to watch Kafka.

Everything here is real: models trained with the trainer and registered in MLflow, services
started as the console scripts users run, Kafka, Postgres and MinIO from the test stack.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.e2e.support import (
    Models,
    Predictions,
    canvas_drawings,
    collect_predictions,
    eventually,
    everything_settled,
    mnistream,
)
from tests.system import System


@pytest.fixture(scope="session")
def models(stack: None) -> Models:
    """Train and register a weak MLP and a better MLP on MNIST subsets (seconds each)."""
    from trainer.config import TrainConfig
    from trainer.pipeline import train_and_register
    from trainer.settings import Settings as TrainerSettings

    settings = TrainerSettings()
    weak = train_and_register(
        TrainConfig(arch="mlp", hidden=10, limit_train=3000, epochs=1, augment=False, workers=0),
        settings,
    )
    better = train_and_register(
        TrainConfig(arch="mlp", hidden=128, limit_train=20000, epochs=1, augment=False, workers=0),
        settings,
    )
    assert better.test_accuracy > weak.test_accuracy, (weak, better)
    return Models(weak=weak.version, better=better.version)


@pytest.fixture(scope="session")
def system(models: Models) -> Iterator[System]:
    """gateway, history-service, 2 inference workers, 2 rescore workers; the weak model promoted."""
    running = System(inference_workers=2, rescore_workers=2)
    # The CLI run by the tests talks to this system's services.
    os.environ["HISTORY_URL"] = running.history_url
    os.environ["GATEWAY_URL"] = running.gateway_url
    mnistream("promote", str(models.weak), "--force", "--reason", "e2e: first model")
    running.start()
    running.inference_ready()
    # The first promotion rescores what earlier suites stored; let it finish so that every test
    # starts from a quiet system (tests that compare rows would otherwise see it mid-way).
    asyncio.run(eventually(everything_settled, 300, "the first promotion's rescore settled"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def drawings() -> list[bytes]:
    """MNIST test digits rendered like browser canvas drawings (280×280 RGBA PNG)."""
    return canvas_drawings(300)


@pytest.fixture
async def predictions(stack: None) -> AsyncIterator[Predictions]:
    """Collects `digits.predicted` from now on (a consumer without a group)."""
    async with collect_predictions() as collected:
        yield collected
