"""A shadow rollout under load: each inference worker holds two CNNs and reads every drawing
with both. Measured beside the same load with the champion alone, on the same fresh workers:
their peak memory (VmHWM) with one CNN and with two, and the end-to-end latency of the answers.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from mnistream_system.processes import Service

from bench import config, phases
from bench.memory import process_group_peak_mb
from bench.models import BenchModel, mnistream, promote, train_second_cnn
from bench.stack import BenchError

# The memory target of a worker during a rollout (the issue's: two CNNs loaded).
ROLLOUT_RSS_MB = 250.0
# Under this kind the workers' peaks during the rollout are kept, apart from the one-model
# figure ("inference") that the worker memory target is about.
KIND = "inference, shadow rollout (two CNNs)"
WORKERS = ("inference-0", "inference-1")


def _peak_mb(services: dict[str, Service]) -> float:
    peaks = []
    for name in WORKERS:
        process = services[name].process
        if process is None or process.poll() is not None:
            raise BenchError(f"{name} is not running")
        peaks.append(process_group_peak_mb(process.pid).largest_mb)
    return round(max(peaks), 1)


async def _candidate_everywhere(version: int) -> None:
    """Wait (up to 2 minutes) until every worker's /readyz says it holds the rollout's
    candidate, loaded."""
    states: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(120), httpx.AsyncClient(timeout=5) as client:
            while True:
                states = []
                for index in range(len(WORKERS)):
                    port = config.INFERENCE_PORT + index
                    ready = (await client.get(f"http://127.0.0.1:{port}/readyz")).json()
                    states.append(ready.get("rollout") or {})
                if all(s.get("candidate_loaded") for s in states):
                    return
                await asyncio.sleep(0.5)
    except TimeoutError:
        raise BenchError(f"the workers did not load candidate v{version}: {states}") from None


def shadow_rollout(bench: phases.Bench) -> dict[str, Any]:
    """The champion CNN alone, then in a shadow rollout of another CNN, at one rate."""
    candidate = train_second_cnn(bench.sizes)
    cnn = bench.models.cnn.version
    bench.services.stop_all()
    if bench.champion != cnn:
        promote(cnn, "bench: the CNN is the champion of the rollout phase")
        bench.champion = cnn
    return asyncio.run(_measure(bench, candidate))


async def _measure(bench: phases.Bench, candidate: BenchModel) -> dict[str, Any]:
    await phases.start_system(bench)
    rate, seconds = bench.sizes.rollout_rate, bench.sizes.rollout_seconds

    alone = await phases.open_loop(bench, rate, seconds)
    alone_figures = phases.latency_figures(alone, rate, seconds)
    one_model_mb = _peak_mb(bench.services.running)

    shadow_args = ("shadow", str(candidate.version), "--force", "--reason", "bench: shadow")
    await asyncio.to_thread(mnistream, *shadow_args)
    try:
        await _candidate_everywhere(candidate.version)
        shadow = await phases.open_loop(bench, rate, seconds)
        shadow_figures = phases.latency_figures(shadow, rate, seconds)
        two_models_mb = _peak_mb(bench.services.running)
    finally:
        await asyncio.to_thread(mnistream, "abort", "--reason", "bench: end of the rollout phase")
    accepted = set(shadow.accepted)
    shadows = {s.digit_id for s in shadow.collector.seen if s.kind == "shadow"} & accepted
    for name in WORKERS:  # their peak is two models', not the one-model target's
        bench.services.stop(name, kind=KIND)
    bench.log(
        f"shadow rollout at {rate}/s: worker peak RSS {one_model_mb} MB with one CNN, "
        f"{two_models_mb} MB with two; p99 {alone_figures['p99_ms']} → "
        f"{shadow_figures['p99_ms']} ms"
    )
    return {
        "rate_per_s": rate,
        "seconds": seconds,
        "candidate": candidate.as_dict(),
        "worker_peak_rss_mb_one_cnn": one_model_mb,
        "worker_peak_rss_mb_two_cnns": two_models_mb,
        "shadow_readings": len(shadows),
        "alone": alone_figures | {"cdf_ms": []},
        "shadow": shadow_figures | {"cdf_ms": []},
    }
