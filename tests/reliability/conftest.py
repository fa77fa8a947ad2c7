"""Reliability fixtures: the services on their own ports, two registered models, real drawings.

The suite stops and kills parts of the stack, so `make chaos` gives it a stack of its own
(ports apart from `make test`'s); it never skips: a stack that is down fails the session.
"""

from __future__ import annotations

import pytest

from tests.fixtures import ModelSpec, SuiteConfig
from tests.reliability.support import REPORT

BASE_PORT = 17300


@pytest.fixture(scope="session")
def suite() -> SuiteConfig:
    """The reliability suite: its own ports, small rescore chunks at a paced rate (a job lasts
    long enough to be hit: unpaced, 2,000 drawings took under 3 s, and the suite once missed
    the job running), two small models, 200 drawings."""
    return SuiteConfig(
        "reliability",
        weak=ModelSpec(hidden=10, limit_train=3000),
        better=ModelSpec(hidden=32, limit_train=3000),
        base_port=BASE_PORT,
        drawings=200,
        env={"RESCORE_CHUNK_SIZE": "20", "RESCORE_MAX_RATE": "150"},
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The counts of every fault, shown with or without -s."""
    if REPORT:
        terminalreporter.section("reliability counts")
        for line in REPORT:
            terminalreporter.write_line(line)
