"""The three-broker suite: the services on ports of their own, over a stack whose Kafka is a
cluster of three KRaft nodes (`make chaos-cluster`, part of `make chaos`: KAFKA_BROKERS=3,
replication factor 3, min.insync.replicas 2). It never skips: a stack that is down, or one
with a single broker, fails the session."""

from __future__ import annotations

import pytest

from tests.fixtures import ModelSpec, SuiteConfig
from tests.reliability.support import REPORT

BASE_PORT = 17600


@pytest.fixture(scope="session")
def suite() -> SuiteConfig:
    """Two small models and 200 drawings, as in the reliability suite."""
    return SuiteConfig(
        "cluster",
        weak=ModelSpec(hidden=10, limit_train=3000),
        better=ModelSpec(hidden=32, limit_train=3000),
        base_port=BASE_PORT,
        drawings=200,
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The counts of every fault, shown with or without -s."""
    if REPORT:
        terminalreporter.section("three-broker counts")
        for line in REPORT:
            terminalreporter.write_line(line)
