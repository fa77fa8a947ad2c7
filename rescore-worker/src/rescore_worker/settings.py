"""Settings of a rescore worker."""

from __future__ import annotations

import os
import socket

from mnistream_common.settings import BaseServiceSettings, KafkaSettings, S3Settings
from pydantic import Field


class Settings(BaseServiceSettings, KafkaSettings, S3Settings):
    """Rescore worker: plans jobs on promotion, rescores chunks of stored drawings."""

    worker_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    history_url: str = Field(default="http://127.0.0.1:8001", description="history-service API.")
    rescore_chunk_size: int = Field(default=500, ge=1, le=10_000, description="Drawings per task.")
    onnx_threads: int = Field(default=1, ge=1)
    prefer_gpu: bool = Field(default=True)
    rescore_http_host: str = Field(default="127.0.0.1")
    rescore_http_port: int = Field(default=8200, ge=0, le=65535, description="/metrics, /readyz.")
