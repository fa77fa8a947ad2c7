"""Prometheus metrics of the gateway."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector


@dataclass
class GatewayMetrics:
    """Counters and histograms exported at /metrics."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes
        self.uploads = Counter("mnistream_uploads", "Uploads by outcome.", ["outcome"], registry=r)
        self.labels = Counter(
            "mnistream_gateway_labels",
            "Labels by outcome: accepted, or rejected_<status> (403 cross-site, 415, 429...).",
            ["outcome"],
            registry=r,
        )
        self.predictions_seen = Counter(
            "mnistream_gateway_predictions",
            "Predictions read from digits.predicted.",
            ["model_version", "kind"],
            registry=r,
        )
        self.latency_ms = Histogram(
            "mnistream_upload_to_prediction_ms",
            "submitted_at to the live prediction reaching the gateway.",
            buckets=(1, 2, 5, 10, 15, 25, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=r,
        )
        # livesum: with several gateway processes, the clients of the live ones added up.
        self.sse_clients = Gauge(
            "mnistream_sse_clients",
            "Connected SSE clients.",
            registry=r,
            multiprocess_mode="livesum",
        )
