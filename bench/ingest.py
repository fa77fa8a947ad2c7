"""Measurements 3 and 7: uploads per second under wrk at a fixed concurrency, for the gateway
(HTTP upload → Kafka ack) and for the teaching app's design (bench/baseline)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench import config
from bench.stack import BenchError

LUA = Path(__file__).with_name("wrk_post.lua")


def wrk_available() -> str:
    """wrk's path, or a clear error saying how to install it."""
    path = shutil.which("wrk")
    if path is None:
        raise BenchError("wrk is not installed; `apt-get install -y wrk` (make bench does this)")
    return path


def run_wrk(
    url: str, inputs: Path, *, connections: int, seconds: int, path: str, timeout_s: int = 10
) -> dict[str, Any]:
    """One wrk run: successful uploads per second and wrk's own totals."""
    threads = min(connections, max(1, os.cpu_count() or 1))
    result = subprocess.run(
        [
            wrk_available(),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            f"{timeout_s}s",
            "-s",
            str(LUA),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + timeout_s + 60,
        env={**os.environ, "BENCH_INPUTS": str(inputs), "BENCH_PATH": path},
        check=False,
    )
    line = next((x for x in result.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    totals: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(
        totals[k]
        for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    good = max(0, totals["requests"] - totals["status_errors"])
    totals["uploads_per_s"] = good / (totals["duration_us"] / 1e6)
    totals["errors"] = errors
    return totals


def gateway_url_for_wrk() -> str:
    """The gateway's upload URL."""
    return f"http://127.0.0.1:{config.GATEWAY_PORT}/api/predictions"


def baseline_url_for_wrk() -> str:
    """The baseline's upload URL."""
    return f"http://127.0.0.1:{config.BASELINE_PORT}/predict"
