"""Fixtures shared by the end-to-end and the reliability suites (a pytest plugin, loaded by
tests/conftest.py): two registered models, the running services, real drawings, a predictions
tap. Each suite says how it differs in a `SuiteConfig` fixture of its own conftest."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest

from tests.e2e.support import (
    Models,
    Predictions,
    canvas_drawings,
    collect_predictions,
    everything_settled,
    mnistream,
)
from tests.polling import eventually
from tests.system import System, system_for_tests


@dataclass(frozen=True)
class ModelSpec:
    """An MLP to train for a suite: hidden units and how many training digits."""

    hidden: int
    limit_train: int


@dataclass(frozen=True)
class SuiteConfig:
    """What a suite's services, models and drawings look like."""

    name: str
    weak: ModelSpec
    better: ModelSpec
    base_port: int = 18000
    drawings: int = 300
    settle_first: bool = False  # wait for the first promotion's rescore before any test
    env: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="session")
def models(stack: None, suite: SuiteConfig) -> Models:
    """The suite's weak and better MLPs, trained and registered in MLflow (seconds each)."""
    from trainer.config import TrainConfig
    from trainer.pipeline import train_and_register
    from trainer.settings import Settings as TrainerSettings

    settings = TrainerSettings()
    weak, better = (
        train_and_register(
            TrainConfig(
                arch="mlp",
                hidden=spec.hidden,
                limit_train=spec.limit_train,
                epochs=1,
                augment=False,
                workers=0,
            ),
            settings,
        )
        for spec in (suite.weak, suite.better)
    )
    assert better.test_accuracy > weak.test_accuracy, (weak, better)
    return Models(weak=weak.version, better=better.version)


@pytest.fixture(scope="session")
def system(models: Models, suite: SuiteConfig) -> Iterator[System]:
    """gateway, history-service, 2 inference and 2 rescore workers; the weak model promoted."""
    running = system_for_tests(
        base_port=suite.base_port, inference_workers=2, rescore_workers=2, **suite.env
    )
    # The CLI run by the tests talks to this system's services (and traces where they do).
    os.environ["HISTORY_URL"] = running.history_url
    os.environ["GATEWAY_URL"] = running.gateway_url
    traced = "OTEL_EXPORTER_OTLP_ENDPOINT" in suite.env
    if traced:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = suite.env["OTEL_EXPORTER_OTLP_ENDPOINT"]
    mnistream("promote", str(models.weak), "--force", "--reason", f"{suite.name}: first model")
    running.start()
    running.inference_ready()
    if suite.settle_first:
        # The first promotion rescores what earlier suites stored; let it finish so that every
        # test starts from a quiet system (tests comparing rows would see it mid-way).
        asyncio.run(eventually(everything_settled, 300, "the first promotion's rescore settled"))
    try:
        yield running
    finally:
        running.stop()
        if traced:  # later tests in this process (in-process services) trace nothing
            os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)


@pytest.fixture(scope="session")
def drawings(suite: SuiteConfig) -> list[bytes]:
    """MNIST test digits rendered like browser canvas drawings (280×280 RGBA PNG)."""
    return canvas_drawings(suite.drawings)


@pytest.fixture
async def predictions(stack: None) -> AsyncIterator[Predictions]:
    """Collects `digits.predicted` from now on (a consumer without a group)."""
    async with collect_predictions() as collected:
        yield collected
