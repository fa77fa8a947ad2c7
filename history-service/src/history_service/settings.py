"""Settings of the history service."""

from __future__ import annotations

from mnistream_common.settings import (
    BaseServiceSettings,
    KafkaSettings,
    PostgresSettings,
    S3Settings,
)
from pydantic import Field, SecretStr


class Settings(BaseServiceSettings, KafkaSettings, PostgresSettings, S3Settings):
    """Consumes the digit topics into Postgres and MinIO; serves the read API."""

    history_host: str = Field(default="127.0.0.1")
    history_port: int = Field(default=8001, ge=1, le=65535)
    history_batch_size: int = Field(default=500, ge=1, le=2000, description="Records per write.")
    history_retry_max_seconds: float = Field(
        default=60.0, gt=0, description="Retry a failed write this long before redelivery."
    )
    rollout_guardrails: bool = Field(
        default=True, description="Abort a rollout whose candidate fails the guardrails."
    )
    rollout_min_labels: int = Field(
        default=30, ge=1, description="Labeled drawings per version before accuracy is judged."
    )
    rollout_max_p99_ms: float = Field(
        default=1000.0, gt=0, description="A candidate's end-to-end p99 above this aborts it."
    )
    rollout_max_failure_rate: float = Field(
        default=0.01,
        ge=0,
        lt=1,
        description="A candidate failing on significantly more of its drawings aborts it.",
    )
    rollout_guard_interval_s: float = Field(
        default=5.0, gt=0, description="How often the guardrails judge the running rollout."
    )
    drift_window: int = Field(
        default=500, ge=50, le=5000, description="Drawings in the short drift window."
    )
    drift_psi_threshold: float = Field(
        default=0.2, gt=0, description="A drift signal's PSI above this raises its alarm."
    )
    drift_gap_threshold: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Estimated minus measured accuracy beyond this raises a version's alarm.",
    )
    drift_interval_s: float = Field(
        default=30.0, ge=0, description="How often the drift gauges are measured (0: never)."
    )
    migrate_on_start: bool = Field(default=True, description="Apply Alembic migrations at start.")
    admin_token: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer token of the admin API (replay); empty: the admin API is off.",
    )
