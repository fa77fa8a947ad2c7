"""Prometheus metrics of the history service."""

from __future__ import annotations

from dataclasses import dataclass, field

from mnistream_common.metrics import dead_letter_counter, lag_gauge
from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector


@dataclass
class HistoryMetrics:
    """Counters exported at /metrics."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes
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
        window_signal = ["window", "signal"]
        self.drift_score = Gauge(
            "mnistream_drift_score",
            "Population stability index of a drift signal against the champion's reference.",
            window_signal,
            registry=r,
        )
        self.drift_alarm = Gauge(
            "mnistream_drift_alarm",
            "1 while a drift signal's score is above its threshold.",
            window_signal,
            registry=r,
        )
        self.drift_drawings = Gauge(
            "mnistream_drift_drawings",
            "Drawings (input signals) or champion readings (output signals) in the window.",
            window_signal,
            registry=r,
        )
        self.champion_version = Gauge(
            "mnistream_champion_version",
            "The ledger's champion as history-service has stored it (0: none yet).",
            registry=r,
        )
        self.drift_threshold = Gauge(
            "mnistream_drift_threshold", "The PSI above which a signal has drifted.", registry=r
        )
        self.accuracy_estimated = Gauge(
            "mnistream_accuracy_estimated",
            "A version's accuracy on the window's drawings, estimated from its confidence.",
            ["window", "model_version"],
            registry=r,
        )
        self.accuracy_measured = Gauge(
            "mnistream_accuracy_measured",
            "Its accuracy measured on the window's labeled drawings (once enough are labeled).",
            ["window", "model_version"],
            registry=r,
        )
