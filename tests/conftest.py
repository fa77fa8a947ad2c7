"""Fixtures shared by every test. Tests that need the stack ask only for what they use.

Each stack fixture checks its component once per session and fails (never skips) with the
address and `make infra-up` when it is unreachable. The helpers live in tests/stack.py.
"""

from __future__ import annotations

import pytest
from mnistream_common.settings import KafkaSettings, S3Settings

from tests.stack import require_kafka, require_minio, require_mlflow, require_postgres

# The fixtures the end-to-end and reliability suites share (models, system, drawings, taps).
pytest_plugins = ["tests.fixtures"]


@pytest.fixture(scope="session")
def kafka() -> KafkaSettings:
    """Where Kafka is, signed in as the operator; fails the test when Kafka is unreachable."""
    return require_kafka()


@pytest.fixture(scope="session")
def database_url() -> str:
    """The application database URL (SQLAlchemy, asyncpg); fails when Postgres is unreachable."""
    return require_postgres()


@pytest.fixture(scope="session")
def s3_settings() -> S3Settings:
    """MinIO's address, credentials and buckets; fails when MinIO is unreachable."""
    return require_minio()


@pytest.fixture(scope="session")
def mlflow_tracking_uri() -> str:
    """The MLflow tracking URI; fails when the MLflow server is unreachable."""
    return require_mlflow()


@pytest.fixture(scope="session")
def stack() -> None:
    """Every component of the stack must answer (fails, never skips)."""
    require_kafka()
    require_postgres()
    require_minio()
    require_mlflow()
