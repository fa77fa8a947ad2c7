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
    admin_token: SecretStr = Field(
        default=SecretStr(""), description="history-service's admin token (for replays)."
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
    mnistream_data: Path = Field(
        default=Path(".data"),
        description="The native stack's data folder: `mnistream setup` keeps each service's "
        "MinIO secret there (credentials/<service>.env), made at random where not given above.",
    )
