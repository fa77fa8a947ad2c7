"""Helpers for tests that use the real local stack (`make infra-up`) and for waiting.

`require_kafka()` and its siblings check one component once per session and fail the test
(never skip it) with the address and the command that starts the stack. They are plain
functions, safe to call from sync and async tests alike; conftest.py wraps them as fixtures.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from mnistream_common.kafka import client_options
from mnistream_common.settings import KafkaSettings, MLflowSettings, PostgresSettings, S3Settings
from mnistream_common.storage import make_minio
from pydantic_settings import SettingsConfigDict
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

T = TypeVar("T")

PROBE_TIMEOUT_S = 5.0
START_HINT = "start the stack with `make infra-up`"


class StackSettings(KafkaSettings, PostgresSettings, S3Settings, MLflowSettings):
    """Where the tests find the stack: the same variables (and .env) the services read."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")


@functools.cache
def stack_settings() -> StackSettings:
    """The stack's addresses, read once per test session."""
    return StackSettings()


def require_kafka() -> KafkaSettings:
    """Where Kafka is and the operator's sign-in, or fail the test when no broker answers."""
    settings = stack_settings()
    _require("kafka", settings.kafka_bootstrap_servers)
    return settings


def require_postgres() -> str:
    """The application database URL, or fail the test when it does not accept a query."""
    url = stack_settings().database_url
    _require("postgres", _without_password(url))
    return url


def require_minio() -> S3Settings:
    """The S3 settings, or fail the test when MinIO or one of its buckets is not there."""
    settings = stack_settings()
    _require("minio", settings.s3_endpoint_url)
    return settings


def require_mlflow() -> str:
    """The MLflow tracking URI, or fail the test when the server is not healthy."""
    uri = stack_settings().mlflow_tracking_uri
    _require("mlflow", uri)
    return uri


def prometheus_url() -> str:
    """Where the stack's Prometheus listens (`OBSERVABILITY=1`, `PROMETHEUS_PORT`)."""
    return f"http://127.0.0.1:{os.environ.get('PROMETHEUS_PORT', '9090')}"


def require_prometheus() -> str:
    """Prometheus' URL, or fail the test when it is not ready (the test stack runs it)."""
    url = prometheus_url()
    _require("prometheus", f"{url} (the stack runs it with OBSERVABILITY=1)")
    return url


def jaeger_url() -> str:
    """Where the stack's Jaeger answers queries (`OBSERVABILITY=1`, `JAEGER_PORT`)."""
    return f"http://127.0.0.1:{os.environ.get('JAEGER_PORT', '16686')}"


def tracing_env() -> dict[str, str]:
    """The settings that make a system's services send their spans to the stack's Jaeger, and
    its gateway link each answer to its trace there (as `make run` sets them)."""
    otlp = f"http://127.0.0.1:{os.environ.get('JAEGER_OTLP_PORT', '4318')}"
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp,
        "TRACE_URL": jaeger_url() + "/api/traces/{trace_id}",
    }


def require_jaeger() -> str:
    """Jaeger's query URL, or fail the test when it does not answer (the test stack runs it)."""
    url = jaeger_url()
    _require("jaeger", f"{url} (the stack runs it with OBSERVABILITY=1)")
    return url


def _require(component: str, address: str) -> None:
    problem = _problem(component)
    if problem:
        pytest.fail(f"{component} is unreachable at {address} ({problem}); {START_HINT}")


@functools.cache
def _problem(component: str) -> str | None:
    # Cached so that a component that is down costs one timeout per session, not one per test.
    probe = _PROBES[component]
    try:
        return probe(stack_settings())
    except Exception as exc:  # any failure to talk to it is "unreachable", with its reason
        reason = str(exc) or f"no answer within {PROBE_TIMEOUT_S:g} s"
        name = type(exc).__name__
        return reason if reason.startswith(name) else f"{name}: {reason}"


def _run_in_thread(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    # A fresh event loop in a worker thread: works whether or not the caller's loop is running.
    async def bounded() -> T:
        return await asyncio.wait_for(make(), PROBE_TIMEOUT_S)

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, bounded()).result()


def _kafka_problem(settings: StackSettings) -> str | None:
    async def list_topics() -> None:
        admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=3000)
        await admin.start()
        try:
            await admin.list_topics()
        finally:
            await admin.close()

    _run_in_thread(list_topics)
    return None


def _postgres_problem(settings: StackSettings) -> str | None:
    async def select_one() -> None:
        engine = create_async_engine(settings.database_url, connect_args={"timeout": 3})
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        finally:
            await engine.dispose()

    _run_in_thread(select_one)
    return None


def _minio_problem(settings: StackSettings) -> str | None:
    client = make_minio(settings)
    missing = [
        bucket
        for bucket in (settings.drawings_bucket, settings.artifacts_bucket)
        if not client.bucket_exists(bucket)
    ]
    return f"bucket {', '.join(missing)} missing" if missing else None


def _mlflow_problem(settings: StackSettings) -> str | None:
    health = f"{settings.mlflow_tracking_uri.rstrip('/')}/health"
    response = httpx.get(health, timeout=PROBE_TIMEOUT_S)
    return None if response.is_success else f"{health} answered {response.status_code}"


def _prometheus_problem(_settings: StackSettings) -> str | None:
    ready = f"{prometheus_url()}/-/ready"
    response = httpx.get(ready, timeout=PROBE_TIMEOUT_S)
    return None if response.is_success else f"{ready} answered {response.status_code}"


def _jaeger_problem(_settings: StackSettings) -> str | None:
    services = f"{jaeger_url()}/api/services"
    response = httpx.get(services, timeout=PROBE_TIMEOUT_S)
    return None if response.is_success else f"{services} answered {response.status_code}"


_PROBES: dict[str, Callable[[StackSettings], str | None]] = {
    "prometheus": _prometheus_problem,
    "jaeger": _jaeger_problem,
    "kafka": _kafka_problem,
    "postgres": _postgres_problem,
    "minio": _minio_problem,
    "mlflow": _mlflow_problem,
}


def _without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{userinfo.split(':')[0]}{at}{host}" if at else url
