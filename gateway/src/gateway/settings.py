"""Settings of the gateway."""

from __future__ import annotations

from pathlib import Path

from mnistream_common.settings import BaseServiceSettings, KafkaSettings
from pydantic import Field, field_validator


class Settings(BaseServiceSettings, KafkaSettings):
    """Public HTTP API: uploads to Kafka, predictions back, history proxied."""

    gateway_host: str = Field(default="127.0.0.1")
    gateway_port: int = Field(default=8000, ge=1, le=65535)
    gateway_workers: int = Field(default=1, ge=1, description="uvicorn worker processes.")
    gateway_run_dir: Path | None = Field(
        default=None,
        description="Where the gateway's processes share state (rate-limit counters, metrics); "
        "the `gateway` command sets it, else each process makes a temporary one.",
    )
    history_url: str = Field(default="http://127.0.0.1:8001", description="history-service API.")
    web_dir: Path = Field(default=Path("web"), description="The web client's static files.")
    max_upload_bytes: int = Field(default=512 * 1024, ge=1024)
    max_image_side: int = Field(default=2048, ge=28)
    max_wait_ms: int = Field(default=5000, ge=0, le=60_000)
    sse_queue_size: int = Field(default=1000, ge=10, description="Events buffered per SSE client.")
    trace_url: str = Field(
        default="",
        description="Where a trace is shown, with {trace_id} in it (Jaeger's UI: "
        "http://127.0.0.1:16686/trace/{trace_id}); the web page links each answer there.",
    )

    @field_validator("trace_url")
    @classmethod
    def _names_the_trace(cls, value: str) -> str:
        if value and "{trace_id}" not in value:
            raise ValueError("TRACE_URL must contain {trace_id}, where the trace's id goes")
        return value

    rate_limit_per_minute: int = Field(
        default=600, ge=0, description="Uploads per client address per minute (0: no limit)."
    )
    label_rate_limit_per_minute: int = Field(
        default=120, ge=0, description="Labels per client address per minute (0: no limit)."
    )
    allowed_origins: str = Field(
        default="",
        description="Comma-separated origins (scheme://host:port) besides the gateway's own "
        "whose pages may send labels; a request from any other Origin is refused (403).",
    )
    record_client_address: bool = Field(
        default=True,
        description="Keep the client's IP address in digits.submitted and digits.labeled "
        "(false: the events carry none; the rate limit still counts by address, in memory).",
    )

    @property
    def label_origins(self) -> frozenset[str]:
        """ALLOWED_ORIGINS as a set, without trailing slashes."""
        return frozenset(
            o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip()
        )
