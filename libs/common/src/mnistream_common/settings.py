"""Settings mixins, one per backend. Each service composes its own `Settings` from these.

Field names are the environment variable names (case-insensitive), so `KAFKA_BOOTSTRAP_SERVERS`
sets `kafka_bootstrap_servers`. Defaults match the local stack (`make infra-up`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Every mixin carries the same config: pydantic merges the configs of a class's bases, and the
# last base's would otherwise win, so a `Settings(BaseServiceSettings, KafkaSettings)` read no
# `.env` at all (KafkaSettings' default `env_file=None` replaced it).
CONFIG = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")


class TracingSettings(BaseSettings):
    """Where OpenTelemetry spans go (the OpenTelemetry SDK's own variable name)."""

    model_config = CONFIG

    otel_exporter_otlp_endpoint: str = Field(
        default="",
        description="OTLP/HTTP base URL of a trace collector (Jaeger: http://127.0.0.1:4318); "
        "empty: no tracing, at no cost.",
    )
    trace_sample_ratio: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Share of uploads (and commands) traced; the rest of the services follow "
        "each trace's decision, so a trace is whole or absent.",
    )


class BaseServiceSettings(TracingSettings):
    """Common to every service: where settings come from, how logs look, where spans go."""

    model_config = CONFIG

    log_level: str = Field(default="INFO", description="Python log level name.")
    log_json: bool = Field(default=True, description="JSON log lines (false: console format).")


class KafkaSettings(BaseSettings):
    """Apache Kafka connection, and who signs in.

    The defaults are the operator's user of the local stack (its one super user). A service run
    by `mnistream-system`, compose or the chart signs in as a user of its own instead, allowed
    only its own topics and groups (`mnistream setup` makes them; see mnistream_cli.kafka_users).
    """

    model_config = CONFIG

    kafka_bootstrap_servers: str = Field(default="127.0.0.1:9092")
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="SASL_PLAINTEXT",
        description="SASL_SSL where Kafka is reached over a network; PLAINTEXT signs in as no one.",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="PLAIN",
        description="PLAIN for the operator of the local stack, SCRAM-SHA-512 for the services.",
    )
    kafka_sasl_username: str = Field(default="mnistream")
    kafka_sasl_password: SecretStr = Field(default=SecretStr("mnistream-secret"))
    kafka_linger_ms: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="How long a producer holds a send to batch it with the next ones (ms).",
    )


class PostgresSettings(BaseSettings):
    """The application database (owned by history-service)."""

    model_config = CONFIG

    database_url: str = Field(
        default="postgresql+asyncpg://mnistream:mnistream@127.0.0.1:5432/mnistream",
        description="SQLAlchemy URL; the asyncpg driver is used.",
    )


class S3Settings(BaseSettings):
    """MinIO (or any S3) holding drawings and MLflow artifacts (ONNX models)."""

    model_config = CONFIG

    s3_endpoint_url: str = Field(default="http://127.0.0.1:9000")
    s3_access_key_id: str = Field(default="mnistream")
    s3_secret_access_key: SecretStr = Field(default=SecretStr("mnistream-secret"))
    s3_region: str = Field(default="us-east-1")
    drawings_bucket: str = Field(default="drawings")
    artifacts_bucket: str = Field(default="mlflow")


class MLflowSettings(BaseSettings):
    """MLflow tracking server and model registry."""

    model_config = CONFIG

    mlflow_tracking_uri: str = Field(default="http://127.0.0.1:5000")
    registered_model_name: str = Field(default="mnist-digits")


class HttpServiceSettings(BaseSettings):
    """Where an HTTP service listens."""

    model_config = CONFIG

    host: str = Field(default="127.0.0.1")
    port: int = Field(default=8000, ge=1, le=65535)
