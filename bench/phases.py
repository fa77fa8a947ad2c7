"""The measurements, each a function of the running bench stack that returns plain data."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mnistream_common.events import ModelPromoted
from mnistream_common.history_api import RescoreJobOut
from mnistream_common.history_client import HistoryClient
from mnistream_common.rescore import job_id_for
from mnistream_common.topics import (
    DIGITS_LABELED,
    DIGITS_PREDICTED,
    DIGITS_SUBMITTED,
    MODEL_PROMOTED,
    RESCORE_TASKS,
    Groups,
)

from bench import config
from bench.baseline.app import prepare_database
from bench.config import Sizes
from bench.ingest import baseline_url_for_wrk, gateway_url_for_wrk, run_wrk
from bench.inputs import Drawings
from bench.kafkaio import (
    Collector,
    Seen,
    collecting,
    group_lag,
    publish_submitted,
    skip_to_end,
    wait_drained,
    wait_group_stable,
)
from bench.models import BenchModels, promote
from bench.profiles import summarize
from bench.stack import BIN, BenchError, Services, history_url
from bench.stats import percentile, quantiles, spread, steady_rate

# The digit topics history-service reads (not the ledger, which a skip must never pass over).
DIGIT_TOPICS = (DIGITS_SUBMITTED, DIGITS_PREDICTED, DIGITS_LABELED)


@dataclass
class Bench:
    """What every phase needs: sizes, the service processes, inputs and models."""

    sizes: Sizes
    services: Services
    drawings: Drawings
    models: BenchModels
    champion: int
    work: Path
    # When the rescore phase began publishing its drawings: the replay phase re-reads from there.
    stored_since: datetime | None = field(default=None)

    def log(self, message: str) -> None:
        """Progress for the person watching."""
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------- 3 and 7: ingest under wrk


def _wrk_runs(
    bench: Bench, url: str, path: str, *, seconds: int, timeout_s: int = 10
) -> list[dict[str, Any]]:
    sizes = bench.sizes
    folder, connections = bench.drawings.folder, sizes.ingest_connections
    run_wrk(url, folder, connections=connections, seconds=2, path=path, timeout_s=timeout_s)
    return [
        run_wrk(
            url, folder, connections=connections, seconds=seconds, path=path, timeout_s=timeout_s
        )
        for _ in range(sizes.repeats)
    ]


def _ingest_by_workers(
    bench: Bench, name: str, start: Callable[[int], object], url: str
) -> dict[str, Any]:
    """wrk against `url` with 1 and 2 uvicorn workers of the service `start` runs."""
    results: dict[str, Any] = {}
    for workers in (1, 2):
        start(workers)
        runs = _wrk_runs(bench, url, "/api/predictions", seconds=bench.sizes.ingest_seconds)
        results[str(workers)] = {
            "uploads_per_s": spread([r["uploads_per_s"] for r in runs]),
            "errors": sum(r["errors"] for r in runs),
            "wrk": runs,
        }
        bench.log(f"{name} ×{workers}: {results[str(workers)]['uploads_per_s']}")
        bench.services.stop(name)
    return results


def bare_ingest(bench: Bench) -> dict[str, Any]:
    """The same wrk load on bench/bare.py, an ASGI app that reads the body and answers at once:
    the reference of the gateway's ingest target."""
    url = f"http://127.0.0.1:{config.BARE_PORT}/api/predictions"
    return _ingest_by_workers(bench, "bare", bench.services.bare, url)


def gateway_ingest(bench: Bench) -> dict[str, Any]:
    """Uploads/s the gateway answers 202 (Kafka acks=all) at 64 connections, 1 and 2 workers."""
    return _ingest_by_workers(bench, "gateway", bench.services.gateway, gateway_url_for_wrk())


def baseline_ingest(bench: Bench, onnx: bytes) -> dict[str, Any]:
    """The same load on the teaching app's design (bench/baseline), 1 and 2 workers."""
    import os

    model_file = bench.work / "baseline-model.onnx"
    model_file.write_bytes(onnx)
    prepare_database(os.environ["DATABASE_URL"])
    results: dict[str, Any] = {}
    for workers in (1, 2):
        bench.services.baseline(workers, model_file)
        # A baseline request can take seconds under this load: a longer window and a longer
        # timeout, so slow answers count as answers instead of as wrk timeouts.
        runs = _wrk_runs(
            bench,
            baseline_url_for_wrk(),
            "/predict",
            seconds=max(12, bench.sizes.ingest_seconds),
            timeout_s=60,
        )
        results[str(workers)] = {
            "uploads_per_s": spread([r["uploads_per_s"] for r in runs]),
            "errors": sum(r["errors"] for r in runs),
            "wrk": runs,
        }
        bench.log(f"baseline ×{workers}: {results[str(workers)]['uploads_per_s']}")
        bench.services.stop("baseline")
    return results


def profile_gateway(bench: Bench) -> dict[str, Any]:
    """cProfile of one gateway process under the same wrk load."""
    path = bench.work / "gateway.prof"
    bench.services.gateway(1, profile=path)
    run = run_wrk(
        gateway_url_for_wrk(),
        bench.drawings.folder,
        connections=bench.sizes.ingest_connections,
        seconds=bench.sizes.profile_seconds,
        path="/api/predictions",
    )
    bench.services.stop("gateway")
    return {"uploads_per_s_under_profiler": round(run["uploads_per_s"], 1), **summarize(path)}


# --------------------------------------------------------------- 2: worker topic → topic


def _breakdown(predictions: list[Seen], per_worker_rate: float) -> dict[str, float]:
    """Per drawing: preprocessing, the model, and the rest (Kafka in/out, events)."""
    count = len(predictions)
    preprocess = sum(p.preprocess_ms for p in predictions) / count
    model = sum(p.inference_ms / p.batch_size for p in predictions) / count
    wall = 1000 / per_worker_rate if per_worker_rate > 0 else float("nan")
    return {
        "wall_ms_per_drawing_per_worker": round(wall, 4),
        "preprocess_ms": round(preprocess, 4),
        "inference_ms": round(model, 4),
        "other_ms": round(wall - preprocess - model, 4),
        "mean_batch_size": round(sum(p.batch_size for p in predictions) / count, 1),
    }


async def _worker_run(bench: Bench, workers: int, profile: Path | None = None) -> dict[str, Any]:
    bench.services.stop_matching("inference-")
    await skip_to_end(Groups.INFERENCE, [DIGITS_SUBMITTED])
    count = bench.sizes.worker_drawings
    ids = await publish_submitted(bench.drawings, count)
    async with collecting() as collector:
        started = time.time()
        for index in range(workers):
            bench.services.inference(index, wait=False, profile=profile)
        missing = await collector.wait_for(ids, timeout=120 + count / 50)
        finished = time.time()
    bench.services.stop_matching("inference-")
    if missing:
        raise BenchError(f"{len(missing)} of {count} pre-filled drawings got no prediction")
    predictions = [collector.live[d] for d in ids]
    rate = steady_rate([p.occurred_at for p in predictions])
    return {
        "drawings": count,
        "steady_per_s": round(rate, 1),
        "start_to_last_s": round(finished - started, 2),
        "first_prediction_after_start_s": round(
            min(p.occurred_at for p in predictions) - started, 2
        ),
        "workers_seen": len({p.worker_id for p in predictions}),
        "breakdown": _breakdown(predictions, rate / workers),
    }


async def worker_throughput(bench: Bench) -> dict[str, Any]:
    """Predictions/s from a pre-filled digits.submitted with 1 and 2 workers (steady part)."""
    results: dict[str, Any] = {}
    for workers in (1, 2):
        runs = [await _worker_run(bench, workers) for _ in range(bench.sizes.repeats)]
        results[str(workers)] = {"per_s": spread([r["steady_per_s"] for r in runs]), "runs": runs}
        bench.log(f"inference worker ×{workers}: {results[str(workers)]['per_s']}")
    return results


async def profile_worker(bench: Bench) -> dict[str, Any]:
    """cProfile of one inference worker draining a pre-filled topic."""
    path = bench.work / "inference-worker.prof"
    run = await _worker_run(bench, 1, profile=path)
    return {"steady_per_s_under_profiler": run["steady_per_s"], **summarize(path)}


# --------------------------------------------------------------- 4 and 5: the live system


async def start_system(bench: Bench, *, rescore_workers: int = 0) -> None:
    """history-service, the gateway (`system_gateways` processes) and two inference workers
    (and `rescore_workers`), past old records."""
    bench.services.stop_all()
    await skip_to_end(Groups.INFERENCE, [DIGITS_SUBMITTED])
    await skip_to_end(Groups.HISTORY, DIGIT_TOPICS)
    bench.services.history()
    bench.services.gateway(bench.sizes.system_gateways)
    for index in range(2):
        bench.services.inference(index)
    for index in range(rescore_workers):
        bench.services.rescore(index)
    for index in range(2):
        port = config.INFERENCE_PORT + index
        service = bench.services.running[f"inference-{index}"]
        Services.wait_ready(service, url=f"http://127.0.0.1:{port}/readyz")
    await open_loop(bench, 50, 2.0)  # warm every path once


@dataclass
class OpenLoopRun:
    """One open-loop run: what the generator got back and what the consumer saw."""

    outcomes: list[dict[str, Any]]
    collector: Collector
    accepted: list[uuid.UUID]
    missing: list[uuid.UUID]
    started: float


async def open_loop(
    bench: Bench, rate: int, seconds: float, during: Callable[[], object] | None = None
) -> OpenLoopRun:
    """Uploads at `rate` per second for `seconds` (bench/openloop.py), with `during` called a
    quarter of the way in; what was answered, and the predictions seen for it."""
    out = bench.work / f"openloop-{rate}-{time.time_ns()}.json"
    async with collecting() as collector:
        started = time.time()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.openloop",
            f"--port={config.GATEWAY_PORT}",
            f"--rate={rate}",
            f"--seconds={seconds}",
            f"--inputs={bench.drawings.folder}",
            f"--out={out}",
            cwd=config.ROOT,
        )
        if during is not None:
            # Early in the run: `mnistream promote` starts a Python CLI, slow on a busy machine.
            await asyncio.sleep(seconds * 0.25)
            await asyncio.to_thread(during)
        if await process.wait() != 0:
            raise BenchError(f"the open-loop generator failed ({process.returncode})")
        outcomes: list[dict[str, Any]] = json.loads(out.read_text())["outcomes"]
        accepted = [uuid.UUID(o["digit_id"]) for o in outcomes if o["digit_id"]]
        missing = await collector.wait_for(accepted, timeout=60)
    return OpenLoopRun(outcomes, collector, accepted, missing, started)


def latency_figures(run: OpenLoopRun, rate: int, seconds: float) -> dict[str, Any]:
    """End-to-end, server and HTTP latency quantiles of a run, and what failed or was lost."""
    scheduled = {
        uuid.UUID(o["digit_id"]): o["scheduled"] for o in run.outcomes if o["digit_id"] is not None
    }
    e2e = [
        (run.collector.live[d].observed_at - scheduled[d]) * 1000
        for d in run.accepted
        if d in run.collector.live
    ]
    server = [
        (p.occurred_at - p.submitted_at) * 1000
        for d in run.accepted
        if (p := run.collector.live.get(d)) is not None and p.submitted_at is not None
    ]
    http = [(o["answered"] - o["scheduled"]) * 1000 for o in run.outcomes if o["digit_id"]]
    return {
        "offered_per_s": rate,
        "sent": len(run.outcomes),
        "accepted_per_s": round(len(run.accepted) / seconds, 1),
        "failed": sum(1 for o in run.outcomes if o["status"] not in (200, 202)),
        "lost": len(run.missing),
        **{f"p{q}_ms": round(percentile(e2e, q), 2) for q in (50, 95, 99)},
        "max_ms": round(max(e2e, default=float("nan")), 2),
        **{f"server_p{q}_ms": round(percentile(server, q), 2) for q in (50, 99)},
        **{f"http_202_p{q}_ms": round(percentile(http, q), 2) for q in (50, 99)},
        "cdf_ms": quantiles(e2e),
        "queue_ms_mean": round(
            sum(run.collector.live[d].queue_ms for d in run.accepted if d in run.collector.live)
            / max(1, len(e2e)),
            2,
        ),
    }


async def latency(bench: Bench) -> dict[str, Any]:
    """Upload → prediction latency at fixed offered rates (open loop)."""
    results: dict[str, Any] = {}
    for rate in bench.sizes.rates:
        runs = []
        for _ in range(bench.sizes.slow_repeats):
            run = await open_loop(bench, rate, bench.sizes.rate_seconds)
            runs.append(latency_figures(run, rate, bench.sizes.rate_seconds))
            await wait_drained(Groups.HISTORY, timeout=60, at_most=50)
        results[str(rate)] = {
            **{f"p{q}_ms": spread([r[f"p{q}_ms"] for r in runs]) for q in (50, 95, 99)},
            "runs": runs,
        }
        bench.log(
            f"latency at {rate}/s: p50 {results[str(rate)]['p50_ms']['median']} ms, "
            f"p99 {results[str(rate)]['p99_ms']['median']} ms"
        )
    return results


def _batches(predictions: list[Seen]) -> list[tuple[float, float, int]]:
    """(start, max queue_ms, model version) per batch: a worker's consecutive predictions that
    share the batch's timings."""
    batches: list[tuple[float, float, int]] = []
    last_key: tuple[float, float, int] | None = None
    for p in sorted(predictions, key=lambda s: s.occurred_at):
        key = (p.inference_ms, p.preprocess_ms, p.batch_size)
        if key != last_key:
            batches.append((p.occurred_at, p.queue_ms, p.version))
            last_key = key
        else:
            start, queue, version = batches[-1]
            batches[-1] = (start, max(queue, p.queue_ms), version)
    return batches


def _swap_figures(run: OpenLoopRun, event: ModelPromoted, seconds: float) -> dict[str, Any]:
    by_worker: dict[str, list[Seen]] = defaultdict(list)
    for d in run.accepted:
        if (p := run.collector.live.get(d)) is not None:
            by_worker[p.worker_id].append(p)
    window = 1.0
    around: dict[str, list[float]] = {"queue": [], "gap": []}
    before: dict[str, list[float]] = {"queue": [], "gap": []}
    swaps = {}
    for worker, predictions in by_worker.items():
        batches = _batches(predictions)
        swapped = [b[0] for b in batches if b[2] == event.model.version]
        if not swapped:
            continue
        swap_at = swapped[0]
        swaps[worker] = round(swap_at - event.promoted_at.timestamp(), 3)
        for previous, current in itertools.pairwise(batches):
            gap = (current[0] - previous[0]) * 1000
            target = around if abs(current[0] - swap_at) <= window else before
            if target is before and not (run.started + 1 < current[0] < swap_at - window):
                continue
            target["gap"].append(gap)
            target["queue"].append(current[1])
    unswapped = sorted(set(by_worker) - set(swaps))
    if unswapped or not swaps:
        # Without the swap in the run, "the longest wait around the swap" would read 0 ms.
        published = event.promoted_at.timestamp() - run.started
        raise BenchError(
            f"the swap to v{event.model.version} was not seen on {unswapped or 'any worker'} "
            f"within the run ({seconds:g} s; the promotion was published {published:.1f} s "
            "in); lengthen swap_seconds"
        )
    promoted_at = event.promoted_at.timestamp()
    failed = [o for o in run.outcomes if o["status"] not in (200, 202)]
    return {
        "failed": len(failed),
        # Failures answered before the promotion was even published are the load itself.
        "failed_before_promotion": sum(1 for o in failed if o["answered"] < promoted_at),
        "lost": len(run.missing),
        "accepted": len(run.accepted),
        "swap_after_promotion_s": swaps,
        "max_queue_ms_around_swap": round(max(around["queue"], default=0.0), 2),
        "max_queue_ms_before": round(max(before["queue"], default=0.0), 2),
        "max_batch_gap_ms_around_swap": round(max(around["gap"], default=0.0), 2),
        "max_batch_gap_ms_before": round(max(before["gap"], default=0.0), 2),
        "latency": latency_figures(run, 0, seconds) | {"cdf_ms": []},
    }


async def hot_swap(bench: Bench) -> dict[str, Any]:
    """Promotions while 200 uploads/s flow: nothing lost or failed, how long batches waited."""
    runs = []
    for _ in range(bench.sizes.slow_repeats):
        target = bench.models.other(bench.champion)
        promoted: list[ModelPromoted] = []

        took: list[float] = []

        def promote_now(
            version: int = target.version,
            into: list[ModelPromoted] = promoted,
            took: list[float] = took,
        ) -> None:
            began = time.monotonic()
            into.append(promote(version, "bench: hot swap under load"))
            took.append(time.monotonic() - began)

        run = await open_loop(bench, bench.sizes.swap_rate, bench.sizes.swap_seconds, promote_now)
        bench.champion = target.version
        figures = _swap_figures(run, promoted[0], bench.sizes.swap_seconds)
        figures["promote_cli_s"] = round(took[0], 2)
        runs.append(figures)
        bench.log(
            f"hot swap to v{target.version}: failed {figures['failed']}, lost {figures['lost']}, "
            f"max queue around swap {figures['max_queue_ms_around_swap']} ms"
        )
        await wait_drained(Groups.HISTORY, timeout=60, at_most=50)
    keys = (
        "max_queue_ms_around_swap",
        "max_queue_ms_before",
        "max_batch_gap_ms_around_swap",
        "max_batch_gap_ms_before",
    )
    return {
        "failed": sum(r["failed"] for r in runs),
        "failed_before_promotion": sum(r["failed_before_promotion"] for r in runs),
        "lost": sum(r["lost"] for r in runs),
        **{key: spread([r[key] for r in runs]) for key in keys},
        "runs": runs,
    }


# --------------------------------------------------------------- 6: rescore


def _history_reset() -> None:
    result = subprocess.run(
        [str(BIN / "history-service"), "reset", "--yes"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"history-service reset failed:\n{result.stdout}\n{result.stderr}")


async def _stored_count(client: HistoryClient) -> int:
    return await client.stored_count()


async def store_drawings(bench: Bench, count: int) -> float:
    """Exactly `count` drawings stored by history-service (direct DigitSubmitted events)."""
    bench.services.stop_all()
    _history_reset()
    await skip_to_end(Groups.HISTORY, DIGIT_TOPICS)
    bench.services.history()
    started = time.monotonic()
    bench.stored_since = datetime.now(UTC)
    await publish_submitted(bench.drawings, count)
    async with HistoryClient.at(history_url(), timeout=60) as client:
        deadline = time.monotonic() + 300 + count / 20
        while (stored := await _stored_count(client)) < count:
            if time.monotonic() > deadline:
                raise BenchError(f"history-service stored {stored} of {count} drawings")
            await asyncio.sleep(1.0)
    return round(count / (time.monotonic() - started), 1)


async def _rescore_job(
    bench: Bench, client: HistoryClient, total: int, workers: int
) -> dict[str, Any]:
    target = bench.models.other(bench.champion)
    async with collecting() as collector:
        event = await asyncio.to_thread(promote, target.version, "bench: rescore")
        bench.champion = target.version
        promoted_at = event.promoted_at.timestamp()
        job = await _job_done(client, job_id_for(event), total)
        done_at = time.time()
    rescored = [p for p in collector.seen if p.kind == "rescore" and p.version == target.version]
    seconds = done_at - promoted_at
    return {
        "model_version": target.version,
        "total": job.total,
        "seconds": round(seconds, 2),
        "per_s": round(total / seconds, 1),
        "last_prediction_after_s": round(job.updated_at.timestamp() - promoted_at, 2),
        "first_prediction_after_s": round(job.started_at.timestamp() - promoted_at, 2),
        "breakdown": _rescore_breakdown(rescored, workers * seconds * 1000 / total),
    }


async def _job_done(client: HistoryClient, job_id: uuid.UUID, total: int) -> RescoreJobOut:
    deadline = time.monotonic() + 120 + total / 20
    while time.monotonic() < deadline:
        job = await client.job(job_id)
        if job is not None and job.done >= total:
            return job
        await asyncio.sleep(0.1)
    raise BenchError(f"rescore job {job_id} did not finish in time")


def _rescore_breakdown(rescored: list[Seen], wall_ms: float) -> dict[str, float]:
    """Per drawing and worker: fetching from MinIO, preprocessing, the model, the rest."""
    if not rescored:
        return {}
    chunks = {(p.worker_id, p.queue_ms, p.inference_ms): p.batch_size for p in rescored}
    drawings = sum(chunks.values()) or 1
    fetch = sum(queue for (_, queue, _), _size in chunks.items()) / drawings
    model = sum(inference for (_, _, inference), _size in chunks.items()) / drawings
    preprocess = sum(p.preprocess_ms for p in rescored) / len(rescored)
    return {
        "wall_ms_per_drawing_per_worker": round(wall_ms, 3),
        "fetch_ms": round(fetch, 3),
        "preprocess_ms": round(preprocess, 3),
        "inference_ms": round(model, 3),
        "other_ms": round(wall_ms - fetch - preprocess - model, 3),
        "chunks": len(chunks),
    }


async def rescore(bench: Bench) -> dict[str, Any]:
    """Rescore throughput over `rescore_drawings` stored drawings with 1 and 2 workers."""
    total = bench.sizes.rescore_drawings
    ingest_rate = await store_drawings(bench, total)
    bench.log(f"{total} drawings stored ({ingest_rate}/s through history-service)")
    results: dict[str, Any] = {"drawings": total, "history_store_per_s": ingest_rate}
    async with HistoryClient.at(history_url(), timeout=30) as client:
        for workers in (1, 2):
            bench.services.stop_matching("rescore-")
            await skip_to_end(Groups.RESCORE_PLANNER, [MODEL_PROMOTED])
            await skip_to_end(Groups.RESCORE, [RESCORE_TASKS])
            for index in range(workers):
                bench.services.rescore(index)
            await wait_group_stable(Groups.RESCORE, workers, timeout=60)
            await wait_group_stable(Groups.RESCORE_PLANNER, workers, timeout=60)
            runs = [
                await _rescore_job(bench, client, total, workers)
                for _ in range(bench.sizes.slow_repeats)
            ]
            results[str(workers)] = {"per_s": spread([r["per_s"] for r in runs]), "runs": runs}
            bench.log(f"rescore ×{workers}: {results[str(workers)]['per_s']}")
            bench.services.stop_matching("rescore-")
    return results


async def replay(bench: Bench) -> dict[str, Any]:
    """history-service rebuilding an emptied database from the topics, as `mnistream replay
    history --since` asks it to: records per second over the rescore phase's records (its
    drawings and every prediction of them), and a check that every drawing came back."""
    if bench.stored_since is None:
        raise BenchError("the replay phase re-reads the rescore phase's records: run it after")
    expected = bench.sizes.rescore_drawings
    runs: list[dict[str, Any]] = []
    for _ in range(bench.sizes.slow_repeats):
        bench.services.stop_all()
        _history_reset()
        bench.services.history()
        await wait_group_stable(Groups.HISTORY, 1, timeout=60)
        async with HistoryClient.at(history_url(), timeout=60) as client:
            started = time.monotonic()
            rewind = await client.replay(config.ADMIN_TOKEN, bench.stored_since)
            deadline = started + 120 + rewind.total / 200
            while await group_lag(Groups.HISTORY) > 0:
                if time.monotonic() > deadline:
                    raise BenchError(f"the replay of {rewind.total} records did not finish")
                await asyncio.sleep(0.25)
            seconds = time.monotonic() - started
            stored = await _stored_count(client)
        if stored != expected:
            raise BenchError(f"the replay stored {stored} of the {expected} drawings")
        runs.append(
            {
                "per_s": round(rewind.total / seconds, 1),
                "records": rewind.total,
                "by_topic": rewind.records,
                "seconds": round(seconds, 2),
            }
        )
        bench.log(f"replay: {rewind.total} records in {seconds:.1f} s")
    bench.services.stop_all()
    return {"drawings": expected, "per_s": spread([r["per_s"] for r in runs]), "runs": runs}
