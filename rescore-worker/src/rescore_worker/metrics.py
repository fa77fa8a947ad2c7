"""Prometheus metrics of a rescore worker (one registry per app, created in the factory)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mnistream_common.metrics import dead_letter_counter, lag_gauge
from prometheus_client import CollectorRegistry, Counter, ProcessCollector


@dataclass
class RescoreMetrics:
    """Counters exported at /metrics."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes
        self.rescored = Counter(
            "mnistream_rescored", "Drawings rescored.", ["model_version", "kind"], registry=r
        )
        self.dead_letters = dead_letter_counter(r)
        self.lag = lag_gauge(r)
