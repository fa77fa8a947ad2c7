"""The CPU-per-drawing report: the JIT share of Kafka and the warm-up are shown as measured."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import cpu
from bench.cpu import jit_seconds
from bench.report_cpu import cpu_section, per_drawing


def _run(total: float, kafka: float, jit: float) -> dict[str, object]:
    return {
        "cpu_ms_per_drawing": {"gateway": total - kafka, "kafka": kafka},
        "cpu_ms_per_drawing_total": total,
        "kafka_jit_ms_per_drawing": jit,
        "p99_ms": 40.0,
    }


DATA = {
    "system_cpu": {
        "warm_up": {
            "schedule": [[100, 15.0], [200, 15.0]],
            "seconds": 41.2,
            "kafka_jit_percent_of_a_core": 33.5,
        },
        "rates": {"200": [_run(8.0, 1.0, 0.25), _run(10.0, 2.0, 0.75), _run(9.0, 1.5, 0.5)]},
    }
}


def test_the_median_jit_share_is_a_row_under_kafka() -> None:
    assert per_drawing(DATA)["200"]["kafka_jit"] == 0.5
    section = cpu_section(DATA, plotted=False)
    lines = section.splitlines()
    kafka = next(i for i, line in enumerate(lines) if line.startswith("| kafka |"))
    assert lines[kafka + 1] == "| (of which Kafka's JIT compiler) | 0.50 | – |"


def test_the_warm_up_is_described_with_its_schedule() -> None:
    section = cpu_section(DATA, plotted=False)
    assert "100/s for 15 s, then 200/s for 15 s; 41.2 s in all" in section
    assert "those threads used 33.5 % of a core" in section


def test_results_from_before_the_warm_up_have_neither() -> None:
    run = _run(8.0, 1.0, 0.0)
    del run["kafka_jit_ms_per_drawing"]
    section = cpu_section({"system_cpu": {"rates": {"200": [run]}}}, plotted=False)
    assert "JIT" not in section
    assert "warm-up" not in section.lower()


def test_a_process_that_is_no_jvm_has_no_jit_time() -> None:
    assert jit_seconds(os.getpid()) == 0.0
    assert jit_seconds(2**22 + 7) == 0.0  # no such process


def test_jit_time_is_the_compiler_threads_of_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def thread(tid: int, name: str, utime: int, stime: int) -> None:
        folder = tmp_path / "4242" / "task" / str(tid)
        folder.mkdir(parents=True)
        fields = ["S", "1", *["0"] * 9, str(utime), str(stime), "0", "0"]
        (folder / "stat").write_text(f"{tid} ({name}) {' '.join(fields)}\n")

    thread(1, "java", 500, 100)
    thread(2, "C2 CompilerThre", 300, 20)
    thread(3, "C1 CompilerThre", 40, 0)
    thread(4, "GC Thread#0", 70, 5)
    monkeypatch.setattr(cpu, "PROC", tmp_path)

    assert jit_seconds(4242) == pytest.approx(360 / cpu.TICK)
