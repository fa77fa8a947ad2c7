"""The services the end-to-end, browser and chaos tests run: `mnistream_system.System` with the
tests' settings, on ports apart from `make run`'s (base 18000 unless a suite picks its own)."""

from __future__ import annotations

from mnistream_system.processes import Service
from mnistream_system.system import BIN, ROOT, Ports, System

# The admin token of every system the tests start (and of the `mnistream` runs that replay).
ADMIN_TOKEN = "test-admin-token-0123456789"
TEST_ENV = {
    "RATE_LIMIT_PER_MINUTE": "0",
    "LABEL_RATE_LIMIT_PER_MINUTE": "0",
    "RESCORE_CHUNK_SIZE": "100",
    "ADMIN_TOKEN": ADMIN_TOKEN,
    "LOG_JSON": "true",
}

__all__ = ["ADMIN_TOKEN", "BIN", "ROOT", "Service", "System", "system_for_tests"]


def system_for_tests(
    *, base_port: int = 18000, inference_workers: int = 2, rescore_workers: int = 1, **env: str
) -> System:
    """A system for tests: the tests' settings (`env` on top), worker ids prefixed `test-`."""
    return System(
        inference_workers,
        rescore_workers,
        Ports.from_base(base_port),
        {**TEST_ENV, **env},
        worker_prefix="test-",
    )
