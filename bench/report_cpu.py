"""The CPU-per-drawing part of the report: targets, the per-component table, the stacked bars,
and the live profiles taken at 200 drawings/s."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench.stats import markdown_table as _table

COMPONENTS = ("gateway", "inference", "history", "rescore", "kafka", "postgres", "minio")
OURS = ("gateway", "inference", "history", "rescore")


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def per_drawing(data: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Median CPU ms per drawing by rate, per component and in total."""
    rates = ((data.get("system_cpu") or {}).get("rates")) or {}
    table: dict[str, dict[str, float]] = {}
    for rate, runs in rates.items():
        row = {
            c: m
            for c in COMPONENTS
            if (m := _median([r["cpu_ms_per_drawing"].get(c, 0.0) for r in runs])) is not None
        }
        row["total"] = _median([r["cpu_ms_per_drawing_total"] for r in runs]) or 0.0
        jit = [r["kafka_jit_ms_per_drawing"] for r in runs if "kafka_jit_ms_per_drawing" in r]
        if jit:
            row["kafka_jit"] = _median(jit) or 0.0
        row["p99_ms"] = _median([r["p99_ms"] for r in runs]) or 0.0
        table[rate] = row
    return table


def baseline_total(data: dict[str, Any]) -> float | None:
    """The teaching app's design: CPU ms per answered upload."""
    value = (data.get("baseline_cpu") or {}).get("cpu_ms_per_drawing_total")
    return float(value) if value is not None else None


def cpu_targets(data: dict[str, Any]) -> list[tuple[str, str, str, str, bool | None]]:
    """(what, this run, target, ratio, met) for the CPU, idle and capacity targets."""
    table = per_drawing(data)
    at200 = table.get("200", {}).get("total")
    base = baseline_total(data)
    idle = ((data.get("system_cpu") or {}).get("idle") or {}).get("ours_percent")
    capacity = ((data.get("system_cpu") or {}).get("capacity")) or {}
    best = capacity.get("highest_rate_p99_within_60ms")
    tried = capacity.get("tried") or []
    best_text = "–" if best is None else f"{best} drawings/s"
    if best == 0 and tried:
        best_text = (
            f"no rate tried: at the lowest, {tried[0]['offered_per_s']}/s, p99 was "
            f"{tried[0]['p99_ms']:,.0f} ms"
        )
    ratio = None if at200 is None or not base else at200 / base
    return [
        (
            "CPU per drawing, every process, at 200 drawings/s",
            "–" if at200 is None else f"{at200:.2f} ms (teaching app's design {base or 0:.1f} ms)",
            "≤ 4 ms and ≤ 1/10 of the teaching app's design",
            "–"
            if at200 is None or not ratio
            else f"{at200 / 4:.2f}× the limit; 1/{1 / ratio:.1f} of it",
            None if at200 is None or ratio is None else at200 <= 4 and ratio <= 0.1,
        ),
        (
            "CPU of the idle stack, our services",
            "–" if idle is None else f"{idle:.1f} % of a core",
            "≤ 5 % of a core",
            "–" if idle is None else f"{idle / 5:.2f}× the limit",
            None if idle is None else idle <= 5,
        ),
        (
            "highest open-loop rate with end-to-end p99 ≤ 60 ms",
            best_text,
            "≥ 400 drawings/s on 2 cores",
            "–" if best is None else f"{best / 400:.2f}× the target",
            None if best is None else best >= 400,
        ),
    ]


def cpu_section(data: dict[str, Any], plotted: bool) -> str:
    """Markdown: CPU per drawing by component and rate, idle CPU, capacity, live profiles."""
    table = per_drawing(data)
    if not table:
        return ""
    rates = sorted(table, key=int)
    base = data.get("baseline_cpu") or {}
    header = [
        "component",
        *(f"{r}/s" for r in rates),
        f"teaching app ({base.get('offered_per_s', '–')}/s)",
    ]
    rows = []
    for component in (*COMPONENTS, "total"):
        cells = [f"{table[r].get(component, 0.0):.2f}" for r in rates]
        base_value = (base.get("cpu_ms_per_drawing") or {}).get(
            "baseline" if component == "gateway" else component
        )
        if component == "total":
            base_value = base.get("cpu_ms_per_drawing_total")
        rows.append([component, *cells, "–" if base_value is None else f"{base_value:.2f}"])
        if component == "kafka" and any("kafka_jit" in table[r] for r in rates):
            jit_cells = [
                f"{table[r]['kafka_jit']:.2f}" if "kafka_jit" in table[r] else "–" for r in rates
            ]
            rows.append(["(of which Kafka's JIT compiler)", *jit_cells, "–"])
    rows.append(["end-to-end p99 (ms)", *(f"{table[r]['p99_ms']:.1f}" for r in rates), "–"])
    out = [
        "\n## CPU per drawing\n",
        "CPU ms (utime + stime from /proc, every process of each component) per accepted "
        "drawing, median of the runs. The teaching app's column is its one process (under "
        "'gateway') and PostgreSQL.\n",
        _table(header, rows),
    ]
    if plotted:
        out.append("\n![CPU per drawing by component](benchmarks/cpu_per_drawing.png)\n")
    out.append(_warm_up(data))
    out.append(_idle(data))
    out.append(_profiles(data))
    return "\n".join(out)


def _warm_up(data: dict[str, Any]) -> str:
    warmed = (data.get("system_cpu") or {}).get("warm_up")
    if not warmed:
        return ""
    steps = ", then ".join(f"{rate}/s for {seconds:g} s" for rate, seconds in warmed["schedule"])
    return (
        f"\nBefore any figure the system ran unmeasured uploads ({steps}; "
        f"{warmed['seconds']} s in all with the drains), so the figures are a running system's: "
        "Kafka's JVM compiles its hot paths (C1/C2 JIT threads) in its first minutes under load. "
        f"During the warm-up those threads used {warmed['kafka_jit_percent_of_a_core']} % of a "
        "core; the row under kafka is what they still used in each measured run.\n"
    )


def _idle(data: dict[str, Any]) -> str:
    idle = (data.get("system_cpu") or {}).get("idle")
    if not idle:
        return ""
    parts = ", ".join(f"{k} {v:.1f} %" for k, v in idle["percent_of_a_core"].items())
    return f"\nIdle, {idle['seconds']} s with no uploads (% of one core): {parts}.\n"


def _profiles(data: dict[str, Any]) -> str:
    profiles = (data.get("system_cpu") or {}).get("profiles_at_200") or {}
    out = []
    for name, profile in profiles.items():
        if not profile.get("samples"):
            continue
        rows = [[frame, f"{share} %"] for frame, share in profile["own"][:10]]
        profiler = "Java Flight Recorder" if profile.get("profiler") == "jfr" else "py-spy"
        out.append(f"\n**{name}** at 200/s ({profiler}, {profile['samples']} samples), own time:\n")
        out.append(_table(["function", "share of samples"], rows))
    return "\n".join(out)


def plot_cpu(data: dict[str, Any], path: Path) -> bool:
    """A stacked bar per rate (and the teaching app): CPU ms per drawing by component."""
    table = per_drawing(data)
    if not table:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r}/s" for r in sorted(table, key=int)]
    columns = [table[r] for r in sorted(table, key=int)]
    base = data.get("baseline_cpu") or {}
    if base:
        per = base.get("cpu_ms_per_drawing", {})
        columns.append({"gateway": per.get("baseline", 0.0), "postgres": per.get("postgres", 0.0)})
        labels.append("teaching app")
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    bottoms = [0.0] * len(columns)
    for index, component in enumerate(COMPONENTS):
        heights = [c.get(component, 0.0) for c in columns]
        ax.bar(labels, heights, bottom=bottoms, label=component, color=f"C{index}")
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    ax.axhline(4.0, color="black", linestyle="--", linewidth=1, label="target 4 ms")
    ax.set_ylabel("CPU ms per drawing")
    ax.set_title("CPU per drawing, every process of the system")
    ax.legend(fontsize=8, ncols=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
