"""Prometheus metrics of the history service."""

from __future__ import annotations

from dataclasses import dataclass, field

from mnistream_common.metrics import dead_letter_counter, lag_gauge
from prometheus_client import CollectorRegistry, Counter, Gauge


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
        self.rollout_running = Gauge(
            "mnistream_rollout_running", "1 while a canary or shadow rollout runs.", registry=r
        )
        self.rollout_percent = Gauge(
            "mnistream_rollout_percent_answered",
            "The running canary's share of drawings its candidate answers (shadow: 0).",
            registry=r,
        )
        rollout_labels = ["model_version", "role"]
        self.rollout_readings = Gauge(
            "mnistream_rollout_readings",
            "Drawings each version read during the running rollout.",
            rollout_labels,
            registry=r,
        )
        self.rollout_labeled = Gauge(
            "mnistream_rollout_labeled",
            "Of those, the drawings with a user label.",
            rollout_labels,
            registry=r,
        )
        self.rollout_correct = Gauge(
            "mnistream_rollout_correct",
            "Of the labeled ones, the drawings each version read right.",
            rollout_labels,
            registry=r,
        )
        self.rollout_failed = Gauge(
            "mnistream_rollout_failed",
            "Drawings each version failed on during the running rollout (its dead letters).",
            rollout_labels,
            registry=r,
        )
        self.rollout_aborts = Counter(
            "mnistream_rollout_guardrail_aborts", "Rollouts a guardrail aborted.", registry=r
        )
