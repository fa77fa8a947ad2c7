"""End-to-end fixtures: registered models, the running services, and ways to watch Kafka.

Everything here is real: models trained with the trainer and registered in MLflow, services
started as the console scripts users run, Kafka, Postgres and MinIO from the test stack.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from tests.e2e.support import mnistream
from tests.fixtures import ModelSpec, SuiteConfig
from tests.stack import tracing_env
from tests.system import ADMIN_TOKEN


@pytest.fixture(scope="session")
def suite() -> SuiteConfig:
    """The end-to-end suite: a weak and a clearly better model, 300 drawings, a quiet start."""
    return SuiteConfig(
        "e2e",
        weak=ModelSpec(hidden=10, limit_train=3000),
        better=ModelSpec(hidden=128, limit_train=20000),
        drawings=300,
        settle_first=True,
        env=tracing_env(),  # every service and command sends its spans to the stack's Jaeger
    )


@pytest.fixture
async def erased_afterwards() -> AsyncIterator[list[uuid.UUID]]:
    """Drawings to erase after the test, so their labels weigh on no other test's gate. The
    command runs in a thread: 300 erasures take about 45 s, and blocking the event loop that
    long timed out the pending fetch of the test's own `digits.predicted` consumer (40 s)."""
    ids: list[uuid.UUID] = []
    yield ids
    if ids:
        env = {"ADMIN_TOKEN": ADMIN_TOKEN}
        reason = "e2e: labels of a test"
        await asyncio.to_thread(
            mnistream, "erase", *map(str, ids), "--yes", "--reason", reason, env=env
        )
