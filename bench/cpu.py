"""CPU time of every process of the system, read from /proc: what a drawing costs end to end.

A component is a process tree (a service's uvicorn workers, PostgreSQL's backends, Kafka's JVM).
Its CPU is utime + stime of every live process in the tree, plus what its roots' reaped children
used (cutime + cstime), so a PostgreSQL backend that exits mid-run still counts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class _Stat:
    ppid: int
    pgid: int
    own: float  # seconds: utime + stime
    reaped: float  # seconds: cutime + cstime


def _read_stat(path: Path) -> tuple[str, _Stat] | None:
    """A process's (or thread's) command name and times, from its `stat` file."""
    try:
        raw = path.read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after the last ')'.
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    times = _Stat(int(fields[1]), int(fields[2]), (utime + stime) / TICK, (cutime + cstime) / TICK)
    return name, times


def _stat(pid: int) -> _Stat | None:
    read = _read_stat(PROC / str(pid) / "stat")
    return None if read is None else read[1]


def _all() -> dict[int, _Stat]:
    stats = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
    return stats


def _tree(root: int, stats: dict[int, _Stat]) -> set[int]:
    members, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, s in stats.items() if s.ppid == parent and pid not in members]
        members.update(children)
        frontier.extend(children)
    return members


Roots = Callable[[], Iterable[int]]


@dataclass(frozen=True)
class Component:
    """A named part of the system and how to find its root processes now."""

    name: str
    roots: Roots


def cpu_seconds(components: Iterable[Component]) -> dict[str, float]:
    """CPU seconds used so far by each component (process trees below its roots)."""
    stats = _all()
    used: dict[str, float] = {}
    for component in components:
        roots = [pid for pid in component.roots() if pid in stats]
        pids = set().union(*(_tree(root, stats) for root in roots)) if roots else set()
        used[component.name] = sum(stats[p].own for p in pids) + sum(stats[r].reaped for r in roots)
    return used


def group_roots(pgid: int | None) -> list[int]:
    """The processes of one process group (a service started in its own session)."""
    if pgid is None:
        return []
    return [pid for pid, s in _all().items() if s.pgid == pgid and pid == pgid] or [pgid]


def pid_file_roots(path: Path, *, first_line: bool = False) -> list[int]:
    """The pid a pid file names (PostgreSQL's postmaster.pid holds it on its first line)."""
    try:
        text = path.read_text()
    except OSError:
        return []
    value = text.splitlines()[0] if first_line else text
    return [int(value.strip())] if value.strip().isdigit() else []


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each component used between two readings."""
    return {name: max(0.0, after[name] - before.get(name, 0.0)) for name in after}


def jit_seconds(pid: int) -> float:
    """CPU seconds a JVM's JIT compiler threads (C1, C2) have used: warm-up work, which a
    broker that has run for a while no longer does. The JVM may end a compiler thread it
    started, and its time then leaves /proc: a difference of two readings can undercount."""
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except OSError:
        return 0.0
    threads = filter(None, (_read_stat(task / "stat") for task in tasks))
    return sum(
        times.own for name, times in threads if name.startswith(("C1 Compiler", "C2 Compiler"))
    )
