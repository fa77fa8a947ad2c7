"""Prometheus metrics of an inference worker (one registry per app, created in the factory)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mnistream_common.metrics import dead_letter_counter, lag_gauge
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

_MS_BUCKETS = (1, 2, 5, 10, 15, 25, 50, 100, 250, 500, 1000, 2500, 5000)


@dataclass
class WorkerMetrics:
    """Counters and histograms exported at /metrics."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes
        self.predictions = Counter(
            "mnistream_predictions", "Predictions published.", ["model_version", "kind"], registry=r
        )
        self.dead_letters = dead_letter_counter(r)
        self.batch_size = Histogram(
            "mnistream_batch_size",
            "Drawings per session.run.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.latency_ms = Histogram(
            "mnistream_upload_to_prediction_ms",
            "From submitted_at to prediction published.",
            buckets=_MS_BUCKETS,
            registry=r,
        )
        self.inference_ms = Histogram(
            "mnistream_inference_ms", "session.run per batch.", buckets=_MS_BUCKETS, registry=r
        )
        self.swaps = Counter("mnistream_model_swaps", "Models swapped in.", registry=r)
        self.candidate_failures = Counter(
            "mnistream_candidate_failures",
            "Drawings a rollout's candidate failed on (the champion answered them).",
            ["model_version"],
            registry=r,
        )
        self.rollout_share = Gauge(
            "mnistream_rollout_percent",
            "The running rollout's share of drawings answered by its candidate (shadow: 0), "
            "or 0 when none runs or its candidate is not loaded.",
            registry=r,
        )
        self.candidate_version = Gauge(
            "mnistream_candidate_version",
            "Version of the rollout's candidate this worker holds (0: none).",
            registry=r,
        )
        self.lag = lag_gauge(r)
        self.model_version = Gauge(
            "mnistream_model_version", "Version of the model now serving (0: none).", registry=r
        )
        self.fallback = Gauge(
            "mnistream_model_fallback",
            "1 while the worker serves an earlier champion because the ledger's newest promotion "
            "cannot be loaded.",
            registry=r,
        )
