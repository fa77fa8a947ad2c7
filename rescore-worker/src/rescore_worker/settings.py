"""Settings of a rescore worker."""

from __future__ import annotations

import os
import socket

from mnistream_common.settings import (
    BaseServiceSettings,
    KafkaSettings,
    MLflowSettings,
    S3Settings,
)
from pydantic import Field, model_validator


class Settings(BaseServiceSettings, KafkaSettings, S3Settings, MLflowSettings):
    """Rescore worker: plans jobs on promotion, rescores chunks of stored drawings."""

    worker_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    history_url: str = Field(default="http://127.0.0.1:8001", description="history-service API.")
    rescore_chunk_size: int = Field(default=500, ge=1, le=10_000, description="Drawings per task.")
    rescore_max_rate: float = Field(
        default=0.0,
        ge=0.0,
        description="Drawings per second this worker rescores at most (0: as fast as it can), "
        "so rescoring a long history leaves CPU to live predictions.",
    )
    onnx_threads: int = Field(default=1, ge=1)
    prefer_gpu: bool = Field(default=True)
    rescore_http_host: str = Field(default="127.0.0.1")
    rescore_http_port: int = Field(default=8200, ge=0, le=65535, description="/metrics, /readyz.")

    @model_validator(mode="after")
    def _chunk_fits_the_poll_interval(self) -> Settings:
        # A paced chunk is held while it waits; Kafka drops a member that holds one past its
        # max poll interval (5 minutes), so one chunk may take at most a minute.
        if self.rescore_max_rate and self.rescore_chunk_size / self.rescore_max_rate > 60:
            raise ValueError(
                f"RESCORE_CHUNK_SIZE {self.rescore_chunk_size} at RESCORE_MAX_RATE "
                f"{self.rescore_max_rate:g}/s takes over 60 s a chunk: raise the rate or "
                "shrink the chunks"
            )
        return self
