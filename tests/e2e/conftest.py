"""End-to-end fixtures: registered models, the running services, and ways to watch Kafka.

Everything here is real: models trained with the trainer and registered in MLflow, services
started as the console scripts users run, Kafka, Postgres and MinIO from the test stack.
"""

from __future__ import annotations

import pytest

from tests.fixtures import ModelSpec, SuiteConfig


@pytest.fixture(scope="session")
def suite() -> SuiteConfig:
    """The end-to-end suite: a weak and a clearly better model, 300 drawings, a quiet start."""
    return SuiteConfig(
        "e2e",
        weak=ModelSpec(hidden=10, limit_train=3000),
        better=ModelSpec(hidden=128, limit_train=20000),
        drawings=300,
        settle_first=True,
    )
