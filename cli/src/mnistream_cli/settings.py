"""Settings of the operator CLI."""

from __future__ import annotations

from pathlib import Path

from mnistream_common.settings import (
    BaseServiceSettings,
    KafkaSettings,
    MLflowSettings,
    S3Settings,
)
from pydantic import Field, SecretStr


class Settings(BaseServiceSettings, KafkaSettings, S3Settings, MLflowSettings):
    """Everything the `mnistream` command talks to."""

    history_url: str = Field(default="http://127.0.0.1:8001", description="history-service API.")
    gateway_url: str = Field(default="http://127.0.0.1:8000")
    jaeger_url: str = Field(
        default="http://127.0.0.1:16686",
        description="Jaeger's query API, which `mnistream trace` reads (OBSERVABILITY=1).",
    )
    admin_token: SecretStr = Field(
        default=SecretStr(""), description="history-service's admin token (for replays)."
    )
    kafka_replication_factor: int = Field(
        default=1,
        ge=1,
        description="Replicas of each topic `mnistream setup` creates: 1 on the one-broker "
        "stack, 3 on a cluster of three (whose min.insync.replicas is 2).",
    )
    max_negative_flip_share: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="The promotion gate refuses a candidate that misreads more than this share "
        "of the user-labeled drawings the champion reads right.",
    )
    negative_flip_min_labels: int = Field(
        default=50,
        ge=1,
        description="Negative flips are judged once the champion reads this many labeled "
        "drawings right (fewer make the share noise).",
    )
    history_s3_secret: SecretStr = Field(
        default=SecretStr(""), description="history-service's MinIO secret; empty: setup's own."
    )
    inference_s3_secret: SecretStr = Field(
        default=SecretStr(""), description="The inference workers' MinIO secret, likewise."
    )
    rescore_s3_secret: SecretStr = Field(
        default=SecretStr(""), description="The rescore workers' MinIO secret, likewise."
    )
    gateway_kafka_secret: SecretStr = Field(
        default=SecretStr(""), description="The gateway's Kafka password; empty: setup's own."
    )
    history_kafka_secret: SecretStr = Field(
        default=SecretStr(""), description="history-service's Kafka password, likewise."
    )
    inference_kafka_secret: SecretStr = Field(
        default=SecretStr(""), description="The inference workers' Kafka password, likewise."
    )
    rescore_kafka_secret: SecretStr = Field(
        default=SecretStr(""), description="The rescore workers' Kafka password, likewise."
    )
    datasets_bucket: str = Field(
        default="datasets",
        description="Where `mnistream dataset snapshot` writes dataset versions (the operator's).",
    )
    mnistream_data: Path = Field(
        default=Path(".data"),
        description="The native stack's data folder: `mnistream setup` keeps each service's "
        "MinIO and Kafka secrets there (credentials/<service>.env), made at random where not "
        "given above.",
    )
