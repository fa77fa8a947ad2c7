"""Settings of an inference worker."""

from __future__ import annotations

import os
import socket

from mnistream_common.settings import (
    BaseServiceSettings,
    KafkaSettings,
    MLflowSettings,
    S3Settings,
)
from pydantic import Field


def default_worker_id() -> str:
    """host-pid: unique per process, readable in logs and prediction events."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseServiceSettings, KafkaSettings, S3Settings, MLflowSettings):
    """Inference worker: Kafka in and out, models from object storage, checked with the
    registry."""

    worker_id: str = Field(default_factory=default_worker_id)
    max_batch_size: int = Field(default=64, ge=1, le=4096, description="Drawings per session.run.")
    # A batch takes what has arrived, without waiting for more. An idle worker's poll waits this
    # long, and records end the wait as they arrive (consume.wake_on_records), so a long wait
    # costs a drawing no time and an idle worker almost no CPU.
    max_batch_delay_ms: int = Field(
        default=500,
        ge=1,
        le=5000,
        description="How long an idle worker's poll waits for drawings (their arrival ends it).",
    )
    onnx_threads: int = Field(default=1, ge=1, description="onnxruntime intra-op threads.")
    prefer_gpu: bool = Field(default=True, description="Use CUDA when onnxruntime-gpu sees a GPU.")
    inference_http_host: str = Field(default="127.0.0.1")
    inference_http_port: int = Field(default=8100, ge=0, le=65535, description="/metrics, /readyz.")
