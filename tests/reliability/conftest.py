"""Reliability fixtures: the services on their own ports, two registered models, real drawings.

The suite stops and kills parts of the stack, so `make chaos` gives it a stack of its own
(ports apart from `make test`'s); it never skips: a stack that is down fails the session.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.e2e.support import Models, Predictions, canvas_drawings, collect_predictions, mnistream
from tests.reliability.support import REPORT
from tests.system import System

BASE_PORT = 17300


class ReliabilitySystem(System):
    """The usual services with small rescore chunks, so a job lasts long enough to be hit."""

    def env(self) -> dict[str, str]:
        """The shared settings, with 20 drawings per rescore chunk."""
        return {**super().env(), "RESCORE_CHUNK_SIZE": "20"}


@pytest.fixture(scope="session")
def models(stack: None) -> Models:
    """Two small MLPs trained and registered in MLflow: the champion and a challenger."""
    from trainer.config import TrainConfig
    from trainer.pipeline import train_and_register
    from trainer.settings import Settings as TrainerSettings

    settings = TrainerSettings()
    versions = [
        train_and_register(
            TrainConfig(
                arch="mlp", hidden=hidden, limit_train=3000, epochs=1, augment=False, workers=0
            ),
            settings,
        ).version
        for hidden in (10, 32)
    ]
    return Models(weak=versions[0], better=versions[1])


@pytest.fixture(scope="session")
def system(models: Models) -> Iterator[System]:
    """gateway, history-service, 2 inference and 2 rescore workers; the weak model promoted."""
    running = ReliabilitySystem(inference_workers=2, rescore_workers=2, base_port=BASE_PORT)
    os.environ["HISTORY_URL"] = running.history_url
    os.environ["GATEWAY_URL"] = running.gateway_url
    mnistream("promote", str(models.weak), "--force", "--reason", "reliability: champion")
    running.start()
    running.inference_ready()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def drawings() -> list[bytes]:
    """MNIST test digits rendered like browser canvas drawings (280×280 RGBA PNG)."""
    return canvas_drawings(200)


@pytest.fixture
async def predictions(stack: None) -> AsyncIterator[Predictions]:
    """`digits.predicted` from now on."""
    async with collect_predictions() as collected:
        yield collected


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The counts of every fault, shown with or without -s."""
    if REPORT:
        terminalreporter.section("reliability counts")
        for line in REPORT:
            terminalreporter.write_line(line)
