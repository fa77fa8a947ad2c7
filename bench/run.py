"""One benchmark run from a clean start: stack, models, the selected measurements, results."""

from __future__ import annotations

import asyncio
import json
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import config, phases, rollout, system_cpu
from bench.config import Sizes
from bench.ingest import wrk_available
from bench.inputs import make_drawings
from bench.machine import describe
from bench.memory import PeakMemory
from bench.models import onnx_bytes, promote, train_models
from bench.raw import measure_raw, measure_steps
from bench.stack import Services, clean_stack_up, stack

SELECTIONS = {
    "all": (
        "raw",
        "ingest",
        "baseline",
        "workers",
        "cpu",
        "latency",
        "hot_swap",
        "rollout",
        "rescore",
        "profiles",
        "tracing",
    ),
    "cpu": ("cpu",),
    # In one process, no stack: what tracing costs per drawing, off and on.
    "tracing": ("tracing",),
    "inference": ("raw", "ingest", "baseline", "workers", "latency", "hot_swap", "rollout"),
    "rollout": ("rollout",),
    "rescore": ("rescore",),
    # Not part of "all": seeding and reading ten million drawings takes about 25 minutes.
    "scale": ("scale",),
}


class Results:
    """The results file, rewritten after every phase so a failure keeps what was measured."""

    def __init__(self, selection: str, sizes: Sizes, label: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        config.RESULTS.mkdir(exist_ok=True)
        self.path = config.RESULTS / f"{stamp}-{selection}.json"
        self.data: dict[str, Any] = {
            "meta": {
                "run": f"{stamp}-{selection}",
                "selection": selection,
                "label": label,
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": describe(),
                "sizes": sizes.as_dict(),
            },
            "errors": {},
        }

    def put(self, key: str, value: Any) -> None:
        """Record a section and save."""
        self.data[key] = value
        self.save()

    def save(self) -> None:
        """Write the file (atomically)."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)


def _phase(results: Results, name: str, measure: Callable[[], Any]) -> None:
    started = time.monotonic()
    print(f"--- {name}", flush=True)
    try:
        results.put(name, measure())
    except Exception as exc:  # one failed phase must not lose the others' figures
        traceback.print_exc()
        results.data["errors"][name] = f"{type(exc).__name__}: {exc}"
        results.save()
    results.data["meta"].setdefault("phase_seconds", {})[name] = round(
        time.monotonic() - started, 1
    )


def run(selection: str, sizes: Sizes, *, keep_stack: bool, label: str) -> Path:
    """Run the selected measurements; returns the results file."""
    wanted = SELECTIONS[selection]
    config.apply_stack_env()
    if {"ingest", "baseline"} & set(wanted):
        wrk_available()
    results = Results(selection, sizes, label)
    memory = PeakMemory()
    services = Services(memory)
    began = time.monotonic()
    try:
        if wanted == ("tracing",):
            _phase(results, "tracing", lambda: _tracing(sizes))
            return results.path
        clean_stack_up()
        if wanted == ("scale",):  # seeded histories: no models, no live traffic
            sample = make_drawings(sizes.inputs)
            with services.session():
                _phase(
                    results,
                    "scale",
                    lambda: asyncio.run(_scale(services, sizes, sample, results)),
                )
            return results.path
        models = train_models(sizes)
        results.put("models", {"cnn": models.cnn.as_dict(), "mlp": models.mlp.as_dict()})
        promote(models.cnn.version, "bench: the CNN is the champion for the throughput figures")
        drawings = make_drawings(sizes.inputs)
        work = config.DATA / "work"
        work.mkdir(parents=True, exist_ok=True)
        results.data["meta"]["upload_mean_bytes"] = round(drawings.mean_bytes)
        bench = phases.Bench(sizes, services, drawings, models, models.cnn.version, work)
        onnx = onnx_bytes(models.cnn)
        with services.session():
            _run_phases(bench, results, wanted, onnx)
    finally:
        services.stop_all()
        results.data["memory"] = memory.as_dict()
        results.data["meta"]["total_seconds"] = round(time.monotonic() - began, 1)
        results.data["meta"]["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        results.save()
        if not keep_stack:
            stack("down")
    return results.path


def _tracing(sizes: Sizes) -> Any:
    from bench.tracing import measure_tracing

    return measure_tracing(make_drawings(sizes.inputs), sizes.repeats, sizes.raw_seconds)


async def _scale(services: Services, sizes: Sizes, sample: Any, results: Results) -> Any:
    from bench.scale import measure

    def record(found: dict[str, Any]) -> None:
        results.put("scale", found)

    return await measure(services, sample, sizes.scale_drawings, config.DATA / "minio", record)


def _run_phases(
    bench: phases.Bench, results: Results, wanted: tuple[str, ...], onnx: bytes
) -> None:
    """Each wanted selection's phases, in the order of `_plan`."""
    for selection, name, measure in _plan(bench, onnx):
        if selection in wanted:
            _phase(results, name, measure)


def _plan(bench: phases.Bench, onnx: bytes) -> list[tuple[str, str, Callable[[], Any]]]:
    """(selection, phase name, measurement) for every phase a run can have."""
    sizes = bench.sizes

    def raw() -> Any:
        return measure_raw(bench.models.cnn, onnx, bench.drawings, sizes.repeats, sizes.raw_seconds)

    def latency() -> Any:
        asyncio.run(phases.start_system(bench))
        return asyncio.run(phases.latency(bench))

    def hot_swap() -> Any:
        asyncio.run(phases.start_system(bench))  # each phase on a fresh system
        return asyncio.run(phases.hot_swap(bench))

    def profiles() -> Any:
        bench.services.stop_all()
        return {
            "gateway": phases.profile_gateway(bench),
            "inference_worker": asyncio.run(phases.profile_worker(bench)),
        }

    return [
        ("raw", "raw_onnx", raw),
        (
            "raw",
            "worker_steps",
            lambda: measure_steps(bench.drawings, sizes.repeats, sizes.raw_seconds),
        ),
        ("ingest", "gateway_ingest", lambda: phases.gateway_ingest(bench)),
        ("ingest", "bare_ingest", lambda: phases.bare_ingest(bench)),
        ("baseline", "baseline", lambda: phases.baseline_ingest(bench, onnx)),
        ("workers", "worker_throughput", lambda: asyncio.run(phases.worker_throughput(bench))),
        ("cpu", "baseline_cpu", lambda: asyncio.run(system_cpu.baseline_cpu(bench, onnx))),
        ("cpu", "system_cpu", lambda: asyncio.run(system_cpu.system_cpu(bench))),
        ("latency", "latency", latency),
        ("hot_swap", "hot_swap", hot_swap),
        ("rollout", "shadow_rollout", lambda: rollout.shadow_rollout(bench)),
        ("rescore", "rescore", lambda: asyncio.run(phases.rescore(bench))),
        ("rescore", "replay", lambda: asyncio.run(phases.replay(bench))),
        ("profiles", "profiles", profiles),
        ("tracing", "tracing", lambda: _tracing(sizes)),
    ]
