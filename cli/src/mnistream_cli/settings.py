"""Settings of the operator CLI."""

from __future__ import annotations

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
