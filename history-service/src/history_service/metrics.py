"""Prometheus metrics of the history service."""

from __future__ import annotations

from dataclasses import dataclass, field

from mnistream_common.metrics import dead_letter_counter, lag_gauge
from prometheus_client import CollectorRegistry, Counter


@dataclass
class HistoryMetrics:
    """Counters exported at /metrics."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.stored = Counter(
            "mnistream_history_events",
            "Events written to storage, by topic.",
            ["topic"],
            registry=r,
        )
        self.predictions = Counter(
            "mnistream_predictions_stored",
            "Predictions stored, by model version and kind.",
            ["model_version", "kind"],
            registry=r,
        )
        self.dead_letters = dead_letter_counter(r)
        self.write_retries = Counter(
            "mnistream_history_write_retries",
            "Writes retried after a storage failure.",
            ["topic"],
            registry=r,
        )
        self.lag = lag_gauge(r)
