"""Small statistics over repeated runs and latency samples (pure, no I/O)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of repeated measurements, and the runs themselves."""
    return {
        "median": round(percentile(values, 50), 3),
        "min": round(min(values), 3) if values else math.nan,
        "max": round(max(values), 3) if values else math.nan,
        "runs": [round(v, 3) for v in values],
    }


def quantiles(values: Sequence[float], points: int = 101) -> list[float]:
    """`points` evenly spaced percentiles (0…100): a compact CDF for the report's plots."""
    return [round(percentile(values, 100 * i / (points - 1)), 3) for i in range(points)]


def steady_rate(times: Sequence[float], trim: float = 0.1) -> float:
    """Events per second between the `trim` and `1 - trim` quantiles of their completion times,
    so start-up (model load, group join) and the tail do not count."""
    ordered = sorted(times)
    if len(ordered) < 10:
        return math.nan
    first = int(len(ordered) * trim)
    last = int(len(ordered) * (1 - trim)) - 1
    elapsed = ordered[last] - ordered[first]
    return (last - first) / elapsed if elapsed > 0 else math.nan


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
