"""Peak resident memory of service processes, read from /proc (VmHWM: the high-water mark)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")


def _field_kb(pid: int, name: str) -> int:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == pgid:
                members.append(int(entry.name))
        except (ProcessLookupError, PermissionError):
            continue
    return members


@dataclass(frozen=True)
class GroupPeak:
    """Peak RSS of the processes of one service: the largest process and all of them."""

    largest_mb: float
    total_mb: float
    processes: int


def process_group_peak_mb(pgid: int) -> GroupPeak:
    """VmHWM of every process in the group `pgid` (a service started in its own session)."""
    peaks = [_field_kb(pid, "VmHWM") / 1024 for pid in _group_members(pgid)]
    peaks = [p for p in peaks if p > 0]
    return GroupPeak(max(peaks, default=0.0), sum(peaks), len(peaks))


@dataclass
class PeakMemory:
    """The highest peak seen per service kind over the whole benchmark."""

    by_service: dict[str, GroupPeak] = field(default_factory=dict)

    def observe(self, service: str, peak: GroupPeak) -> None:
        """Keep the larger of what was seen before and `peak`."""
        seen = self.by_service.get(service)
        if seen is None or peak.largest_mb > seen.largest_mb:
            self.by_service[service] = peak

    def as_dict(self) -> dict[str, dict[str, float]]:
        """For the results file."""
        return {
            name: {
                "peak_rss_mb": round(p.largest_mb, 1),
                "group_total_mb": round(p.total_mb, 1),
                "processes": p.processes,
            }
            for name, p in sorted(self.by_service.items())
        }
