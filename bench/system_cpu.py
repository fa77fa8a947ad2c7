"""What a drawing costs the whole system: CPU per accepted drawing at fixed open-loop rates, the
idle stack's CPU, the highest rate whose end-to-end p99 stays within 60 ms, and the teaching
app's design measured the same way.

Every process of the system counts: gateway, inference workers, history-service, the (idle)
rescore worker, Kafka, PostgreSQL and MinIO. The load generator and the benchmark's own Kafka
tap do not (they stand for the browsers). A window runs from the first upload until the last
prediction is seen and the history group has caught up, so work done after the uploads (the
history catching up) is charged to them, and so is the idle share of that window.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from mnistream_common.topics import Groups

from bench import config
from bench.baseline.app import prepare_database
from bench.cpu import Component, cpu_seconds, delta, jit_seconds, pid_file_roots
from bench.kafkaio import wait_drained
from bench.phases import Bench, latency_figures, open_loop, start_system
from bench.stack import BIN, BenchError
from bench.stats import percentile

P99_LIMIT_MS = 60.0
IDLE_SECONDS = 10.0
# Before any figure: uploads at these (rate/s, seconds), unmeasured.
WARM_UP = ((100, 15.0), (200, 15.0), (400, 10.0))
CAPACITY_RATES = (25, 50, 100, 200, 300, 400, 500, 600, 800)


def components(bench: Bench, *, ours: tuple[str, ...]) -> list[Component]:
    """The system's processes: the services named by prefix in `ours`, then the stack."""
    run = config.DATA / "run"

    def service_roots(prefix: str) -> Any:
        def roots() -> list[int]:
            return [
                s.pid
                for name, s in bench.services.running.items()
                if name.startswith(prefix) and s.pid is not None
            ]

        return roots

    stack = [
        Component("kafka", _kafka_roots),
        Component(
            "postgres",
            lambda: pid_file_roots(config.DATA / "postgres" / "postmaster.pid", first_line=True),
        ),
        Component("minio", lambda: pid_file_roots(run / "minio.pid")),
    ]
    return [Component(prefix, service_roots(prefix)) for prefix in ours] + stack


SYSTEM = ("gateway", "inference", "history", "rescore")


async def idle_cpu(bench: Bench) -> dict[str, Any]:
    """Share of one core each component uses with no uploads at all."""
    parts = components(bench, ours=SYSTEM)
    before = cpu_seconds(parts)
    started = time.monotonic()
    await asyncio.sleep(IDLE_SECONDS)
    used = delta(before, cpu_seconds(parts))
    seconds = time.monotonic() - started
    by = {name: round(100 * value / seconds, 2) for name, value in used.items()}
    ours = sum(v for k, v in by.items() if k in SYSTEM)
    return {"seconds": round(seconds, 1), "percent_of_a_core": by, "ours_percent": round(ours, 2)}


def _kafka_roots() -> list[int]:
    return pid_file_roots(config.DATA / "run" / "kafka.pid")


def _kafka_jit() -> float:
    return sum(map(jit_seconds, _kafka_roots()))


async def warm_up(bench: Bench) -> dict[str, Any]:
    """Load the system before measuring it, so the figures are a running system's: Kafka's JVM
    compiles its hot paths (C1/C2) in its first minutes under load, and that work, which a
    broker that has run for a while no longer does, made most of Kafka's CPU in a cold run."""
    jit_before, started = _kafka_jit(), time.monotonic()
    for rate, seconds in WARM_UP:
        await open_loop(bench, rate, seconds)
        await wait_drained(Groups.HISTORY, timeout=60)
    window = time.monotonic() - started
    jit = max(0.0, _kafka_jit() - jit_before)
    return {
        "schedule": [list(step) for step in WARM_UP],
        "seconds": round(window, 1),
        "kafka_jit_percent_of_a_core": round(100 * jit / window, 1),
    }


async def cpu_at_rate(bench: Bench, rate: int, seconds: float) -> dict[str, Any]:
    """CPU ms per accepted drawing, per component, for one open-loop run at `rate`/s; with the
    share of Kafka's that its JIT compiler threads used (still warming up if it is large)."""
    parts = components(bench, ours=SYSTEM)
    before, jit_before, started = cpu_seconds(parts), _kafka_jit(), time.monotonic()
    run = await open_loop(bench, rate, seconds)
    await wait_drained(Groups.HISTORY, timeout=60)
    used, window = delta(before, cpu_seconds(parts)), time.monotonic() - started
    jit = max(0.0, _kafka_jit() - jit_before)
    accepted = max(1, len(run.accepted))
    figures = latency_figures(run, rate, seconds)
    return {
        "offered_per_s": rate,
        "accepted": len(run.accepted),
        "window_s": round(window, 2),
        "cpu_ms_per_drawing": {k: round(1000 * v / accepted, 3) for k, v in used.items()},
        "cpu_ms_per_drawing_total": round(1000 * sum(used.values()) / accepted, 3),
        "kafka_jit_ms_per_drawing": round(1000 * jit / accepted, 3),
        "cores_busy": round(sum(used.values()) / window, 3),
        **{k: figures[k] for k in ("p50_ms", "p99_ms", "failed", "lost", "accepted_per_s")},
    }


async def system_cpu(bench: Bench) -> dict[str, Any]:
    """Idle CPU, CPU per drawing at each `cpu_rates` rate (repeated), and the capacity search."""
    await start_system(bench, rescore_workers=1)
    warmed = await warm_up(bench)
    bench.log(f"warm-up: {warmed}")
    results: dict[str, Any] = {"warm_up": warmed, "idle": await idle_cpu(bench), "rates": {}}
    bench.log(f"idle: {results['idle']['percent_of_a_core']} % of a core")
    for rate in bench.sizes.cpu_rates:
        runs = []
        for _ in range(bench.sizes.slow_repeats):
            runs.append(await cpu_at_rate(bench, rate, bench.sizes.rate_seconds))
        results["rates"][str(rate)] = runs
        totals = [r["cpu_ms_per_drawing_total"] for r in runs]
        bench.log(f"CPU per drawing at {rate}/s: {totals} ms (p99 {[r['p99_ms'] for r in runs]})")
    results["profiles_at_200"] = await live_profiles(bench)
    results["capacity"] = await capacity(bench)
    return results


async def capacity(bench: Bench) -> dict[str, Any]:
    """The highest tried rate with end-to-end p99 ≤ 60 ms, nothing failed and nothing lost."""
    tried: list[dict[str, Any]] = []
    best = 0
    for rate in CAPACITY_RATES:
        run = await open_loop(bench, rate, bench.sizes.rate_seconds)
        figures = latency_figures(run, rate, bench.sizes.rate_seconds)
        await wait_drained(Groups.HISTORY, timeout=60, at_most=50)
        ok = figures["p99_ms"] <= P99_LIMIT_MS and not figures["failed"] and not figures["lost"]
        tried.append({k: figures[k] for k in ("offered_per_s", "p50_ms", "p99_ms", "failed")})
        bench.log(f"capacity: {rate}/s p99 {figures['p99_ms']} ms {'ok' if ok else 'over'}")
        if not ok:
            break
        best = rate
    return {"highest_rate_p99_within_60ms": best, "limit_ms": P99_LIMIT_MS, "tried": tried}


async def baseline_cpu(bench: Bench, onnx: bytes, rate: int = 20) -> dict[str, Any]:
    """The teaching app's design at `rate`/s: its process and PostgreSQL, per answered upload."""
    bench.services.stop_all()
    model_file = bench.work / "baseline-model.onnx"
    model_file.write_bytes(onnx)
    prepare_database(os.environ["DATABASE_URL"])
    bench.services.baseline(1, model_file)
    parts = components(bench, ours=("baseline",))
    seconds = bench.sizes.rate_seconds
    before, started = cpu_seconds(parts), time.monotonic()
    outcomes = await _generate(bench, config.BASELINE_PORT, "/predict", rate, seconds)
    used, window = delta(before, cpu_seconds(parts)), time.monotonic() - started
    bench.services.stop("baseline")
    answered = [o for o in outcomes if o["status"] == 200]
    latency = [(o["answered"] - o["scheduled"]) * 1000 for o in answered]
    n = max(1, len(answered))
    return {
        "offered_per_s": rate,
        "answered": len(answered),
        "window_s": round(window, 2),
        "cpu_ms_per_drawing": {k: round(1000 * v / n, 3) for k, v in used.items()},
        "cpu_ms_per_drawing_total": round(1000 * sum(used.values()) / n, 3),
        "p50_ms": round(percentile(latency, 50), 2),
        "p99_ms": round(percentile(latency, 99), 2),
    }


async def _generate(
    bench: Bench, port: int, path: str, rate: int, seconds: float
) -> list[dict[str, Any]]:
    out = bench.work / f"openloop-{port}-{rate}-{time.time_ns()}.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.openloop",
        f"--port={port}",
        f"--path={path}",
        f"--rate={rate}",
        f"--seconds={seconds}",
        f"--inputs={bench.drawings.folder}",
        f"--out={out}",
        cwd=config.ROOT,
    )
    if await process.wait() != 0:
        raise BenchError(f"the open-loop generator failed ({process.returncode})")
    outcomes: list[dict[str, Any]] = json.loads(out.read_text())["outcomes"]
    return outcomes


async def live_profiles(bench: Bench, rate: int = 200, seconds: float = 10.0) -> dict[str, Any]:
    """py-spy on the running gateway, an inference worker and history-service under `rate`/s:
    the functions with the most samples (own and inclusive), and the raw stacks for later."""
    folder = config.RESULTS / "profiles"
    folder.mkdir(parents=True, exist_ok=True)
    running = bench.services.running
    targets = {
        name: pid
        for name in ("gateway", "inference-0", "history")
        if name in running and (pid := running[name].pid) is not None
    }
    spies = {
        name: await asyncio.create_subprocess_exec(
            str(BIN / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--duration",
            str(int(seconds)),
            "--rate",
            "50",
            "--format",
            "raw",
            "--output",
            str(folder / f"{name}.collapsed"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for name, pid in targets.items()
    }
    # jcmd comes with a full JDK (a JRE alone has none): without it, no profile of Kafka.
    kafka = _kafka_roots() if shutil.which("jcmd") else []
    recording = folder / "kafka.jfr"
    recording.unlink(missing_ok=True)
    if kafka:
        # Java Flight Recorder, built into the JDK: the broker's own sampling profiler.
        jfr = await asyncio.create_subprocess_exec(
            "jcmd",
            str(kafka[0]),
            "JFR.start",
            "name=bench",
            "settings=profile",
            f"duration={int(seconds)}s",
            f"filename={recording}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await jfr.wait()
    await open_loop(bench, rate, seconds + 2)
    for spy in spies.values():
        await spy.wait()
    profiles: dict[str, Any] = {
        name: summarize_collapsed(folder / f"{name}.collapsed") for name in spies
    }
    if kafka:
        profiles["kafka"] = await summarize_jfr(recording)
    return profiles


async def summarize_jfr(recording: Path, top: int = 12) -> dict[str, Any]:
    """The hottest methods of a JFR recording's execution samples (the JVM's busy threads), in
    the shape `summarize_collapsed` gives: own (top frame) and inclusive shares."""
    for _ in range(50):  # the recording is written when its duration ends
        if _written(recording):
            break
        await asyncio.sleep(0.2)
    printed = await asyncio.create_subprocess_exec(
        "jfr",
        "print",
        "--json",
        "--events",
        "jdk.ExecutionSample",
        str(recording),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await printed.communicate()
    try:
        events = json.loads(out)["recording"]["events"]
    except (ValueError, KeyError):
        return {"samples": 0, "own": [], "inclusive": []}
    stacks = []
    for event in events:
        trace = event["values"].get("stackTrace") or {}
        leaf_first = [_java_frame(f) for f in trace.get("frames", [])]
        stacks.append((leaf_first[::-1], 1))
    return {"profiler": "jfr", **_hottest(stacks, top)}


def _written(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


def _java_frame(frame: dict[str, Any]) -> str:
    method = frame.get("method") or {}
    owner = str((method.get("type") or {}).get("name", "?")).rsplit(".", 1)[-1]
    return f"{owner}.{method.get('name', '?')}"


# Leaf frames where a thread waits rather than works (py-spy's idle heuristic lets some through):
# a pool thread waiting for work, the event loop in select, a blocking socket read.
IDLE_LEAVES = (
    "Condition.wait (threading.py)",
    "_worker (thread.py)",
    "Runner.run (runners.py)",
    "SocketIO.readinto (socket.py)",
    "Queue.get (queue.py)",
)


def summarize_collapsed(path: Path, top: int = 12) -> dict[str, Any]:
    """The hottest frames of a py-spy `raw` (collapsed stacks) profile, as shares of the busy
    samples (stacks whose leaf is a wait are left out)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {"samples": 0, "own": [], "inclusive": []}
    stacks = []
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";") if f]
        if frames and frames[-1] in IDLE_LEAVES:
            continue
        stacks.append((frames, int(count_text)))
    return _hottest(stacks, top)


def _hottest(stacks: list[tuple[list[str], int]], top: int) -> dict[str, Any]:
    """Own (leaf) and inclusive shares of the frames of (stack, count) samples, leaf last."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = sum(count for _, count in stacks)
    for frames, count in stacks:
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count

    def shares(counts: dict[str, int], n: int) -> list[list[Any]]:
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
        return [[frame, round(100 * count / max(1, total), 1)] for frame, count in ranked]

    return {"samples": total, "own": shares(own, top), "inclusive": shares(inclusive, top * 2)}


def _frame(frame: str) -> str:
    # "function (path/to/file.py:123)" → "function (file.py)": lines differ, the place does not.
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return f"{name} ({file})" if file else name
