"""docs/benchmarks.md and its plots, generated from one results file (deterministically)."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import config
from bench.report_cpu import cpu_section, cpu_targets, per_drawing, plot_cpu
from bench.report_scale import scale_section
from bench.rollout import ROLLOUT_RSS_MB
from bench.stats import markdown_table

PLOTS = config.DOCS / "benchmarks"
MD = config.DOCS / "benchmarks.md"


def _get(data: dict[str, Any], *path: str) -> Any:
    node: Any = data
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _spread(s: dict[str, Any] | None, digits: int = 0, unit: str = "") -> str:
    """'median (min–max)' of a spread from stats.spread."""
    if not s:
        return "not measured"
    med, low, high = s["median"], s["min"], s["max"]
    tail = f" ({_fmt(low, digits)}–{_fmt(high, digits)})" if len(s.get("runs", [])) > 1 else ""
    return f"{_fmt(med, digits)}{unit}{tail}"


def _median(s: dict[str, Any] | None) -> float | None:
    return None if not s else float(s["median"])


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


@dataclass(frozen=True)
class Target:
    """One row of docs/design.md's Targets table, checked against this run."""

    what: str
    figure: str
    target: str
    ratio: str
    met: bool | None


def _mark(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[met]


def targets(data: dict[str, Any]) -> list[Target]:
    """Each target of docs/design.md with this run's figure and whether it was met."""
    rows: list[Target] = []
    raw64 = _median(_get(data, "raw_onnx", "batch64_1_thread"))
    raw64_all = _median(_get(data, "raw_onnx", "batch64_all_cores"))
    w1 = _median(_get(data, "worker_throughput", "1", "per_s"))
    w2 = _median(_get(data, "worker_throughput", "2", "per_s"))
    r1 = _ratio(w1, raw64)
    r2 = _ratio(w2, raw64_all)
    rows.append(
        Target(
            "inference worker, topic→topic, CNN champion",
            f"1 worker {_fmt(w1)}/s; 2 workers {_fmt(w2)}/s",
            "≥ 50 % of raw onnxruntime at batch 64",
            f"{_fmt(_pct(r1))} % of 1-thread raw; {_fmt(_pct(r2))} % of all-cores raw",
            None if r1 is None else r1 >= 0.5,
        )
    )
    g = {w: _median(_get(data, "gateway_ingest", w, "uploads_per_s")) for w in ("1", "2")}
    b = {w: _median(_get(data, "baseline", w, "uploads_per_s")) for w in ("1", "2")}
    best_g = max((v for v in g.values() if v is not None), default=None)
    best_b = max((v for v in b.values() if v is not None), default=None)
    vs = _ratio(best_g, best_b)
    bare = {w: _median(_get(data, "bare_ingest", w, "uploads_per_s")) for w in ("1", "2")}
    best_bare = max((v for v in bare.values() if v is not None), default=None)
    vs_bare = _ratio(best_g, best_bare)
    rows.append(
        Target(
            "gateway ingest (HTTP upload → Kafka ack)",
            f"1 worker {_fmt(g['1'])}/s; 2 workers {_fmt(g['2'])}/s; "
            f"bare ASGI app best {_fmt(best_bare)}/s",
            "≥ 50 % of a bare ASGI app reading the same body",
            f"{_fmt(_pct(vs_bare))} % of the bare app",
            None if vs_bare is None else vs_bare >= 0.5,
        )
    )
    rows.append(
        Target(
            "gateway ingest vs the teaching app's design",
            f"best {_fmt(best_g)}/s vs baseline best {_fmt(best_b)}/s",
            "≥ 10× the baseline under the same load",
            f"{_fmt(vs, 1)}×",
            None if vs is None else vs >= 10,
        )
    )
    p50 = _median(_get(data, "latency", "200", "p50_ms"))
    p99 = _median(_get(data, "latency", "200", "p99_ms"))
    rows.append(
        Target(
            "end-to-end latency at 200 uploads/s",
            f"p50 {_fmt(p50, 1)} ms; p99 {_fmt(p99, 1)} ms",
            "p50 ≤ 15 ms, p99 ≤ 60 ms",
            f"p50 {_fmt(_ratio(p50, 15), 2)}× / p99 {_fmt(_ratio(p99, 60), 2)}× the limit",
            None if p50 is None or p99 is None else p50 <= 15 and p99 <= 60,
        )
    )
    swap = data.get("hot_swap")
    if swap:
        worst = float(swap["max_queue_ms_around_swap"]["max"])
        lost = int(swap["lost"]) + int(swap["failed"])
        observed = all(run["swap_after_promotion_s"] for run in swap["runs"])
        rows.append(
            Target(
                "hot swap under 200 uploads/s",
                f"{swap['lost']} lost, {swap['failed']} failed; "
                f"longest batch wait {_fmt(worst, 1)} ms"
                + ("" if observed else " (a swap was not seen in every run)"),
                "0 lost or failed; no batch waits > 100 ms",
                f"{_fmt(worst / 100, 2)}× the wait limit",
                lost == 0 and worst <= 100 and observed,
            )
        )
    else:
        rows.append(Target("hot swap under 200 uploads/s", "–", "0 lost; ≤ 100 ms", "–", None))
    rs = _median(_get(data, "rescore", "2", "per_s"))
    rows.append(
        Target(
            "rescore, 2 workers",
            f"{_fmt(rs)} drawings/s",
            "≥ 3,000 stored drawings/s",
            f"{_fmt(_pct(_ratio(rs, 3000)))} % of target",
            None if rs is None else rs >= 3000,
        )
    )
    rp = _median(_get(data, "replay", "per_s"))
    rows.append(
        Target(
            "replay of the history topics (into an emptied database)",
            f"{_fmt(rp)} records/s",
            "≥ 5,000 records/s",
            f"{_fmt(_pct(_ratio(rp, 5000)))} % of target",
            None if rp is None else rp >= 5000,
        )
    )
    mem = _get(data, "memory", "inference", "peak_rss_mb")
    rows.append(
        Target(
            "inference worker memory",
            f"{_fmt(mem)} MB peak RSS",
            "≤ 200 MB RSS",
            f"{_fmt(_pct(_ratio(mem, 200)))} % of the limit",
            None if mem is None else mem <= 200,
        )
    )
    rollout = data.get("shadow_rollout") or {}
    two, one = rollout.get("worker_peak_rss_mb_two_cnns"), rollout.get("worker_peak_rss_mb_one_cnn")
    rows.append(
        Target(
            "inference worker memory, shadow rollout (two CNNs loaded)",
            f"{_fmt(two)} MB peak RSS (the same workers with one CNN: {_fmt(one)} MB)",
            f"≤ {ROLLOUT_RSS_MB:g} MB RSS",
            f"{_fmt(_pct(_ratio(two, ROLLOUT_RSS_MB)))} % of the limit",
            None if two is None else two <= ROLLOUT_RSS_MB,
        )
    )
    rows += [Target(*row) for row in cpu_targets(data)]
    cnn = _get(data, "models", "cnn")
    mlp = _get(data, "models", "mlp")
    if cnn and mlp:
        rows.append(
            Target(
                "CNN on MNIST test (the bench's quick CNN)",
                f"CNN {cnn['test_accuracy'] * 100:.2f} %; MLP {mlp['test_accuracy'] * 100:.2f} %",
                "CNN ≥ 99.3 %; weak MLP about 92 %",
                f"CNN trained on {cnn['train_images']:,} images × {cnn['epochs']} epochs",
                cnn["test_accuracy"] >= 0.993,
            )
        )
    return rows


def _pct(ratio: float | None) -> float | None:
    return None if ratio is None else ratio * 100


_table = markdown_table


def _figures(data: dict[str, Any]) -> list[list[str]]:
    """Every figure: what, median (min–max), reference and ratio."""
    sections = (
        _raw_figures,
        _worker_figures,
        _ingest_figures,
        _latency_figures,
        _swap_figures,
        _rollout_figures,
        _rescore_figures,
        _memory_figures,
    )
    return [row for section in sections for row in section(data)]


TRACING_ROWS = (
    ("subscriber_no_hooks", "subscriber path per traced record, without tracing's hooks"),
    ("subscriber_off", "subscriber path per traced record, tracing off (no collector)"),
    ("subscriber_on", "subscriber path per traced record, tracing on (spans OTLP-encoded)"),
    ("upload_span_off", "gateway upload span, tracing off"),
    ("upload_span_on", "gateway upload span, tracing on (OTLP-encoded)"),
)


def _tracing(data: dict[str, Any]) -> dict[str, Any]:
    """The run's tracing figures, else those of the newest `bench tracing` run (in one process
    and a minute long, it is run on its own as well), named by its run."""
    if data.get("tracing"):
        return dict(data["tracing"])
    files = config.results_files("tracing")
    if not files:
        return {}
    found = json.loads(files[-1].read_text()).get("tracing") or {}
    return {**found, "run": files[-1].stem} if found else {}


def tracing_section(data: dict[str, Any]) -> str:
    """What tracing costs per drawing: the figures, and whether off costs nothing measurable
    (≤ 1 % of the CPU a drawing costs: the system's, measured in the same run, else the
    design's target for it)."""
    found = _tracing(data)
    title = "\n## Tracing: what it costs per drawing\n"
    base, off = _median(found.get("subscriber_no_hooks")), _median(found.get("subscriber_off"))
    span = _median(found.get("upload_span_off"))
    if base is None or off is None or span is None:
        return title + "\nNo tracing run yet: `python -m bench tracing --report`.\n"
    run = found.get("run") or data["meta"]["run"]
    rows = []
    for key, label in TRACING_ROWS:
        value = _median(found.get(key))
        subscriber = key.startswith("subscriber") and key != "subscriber_no_hooks"
        rows.append(
            [
                label,
                _spread(found.get(key), 2, " µs"),
                f"{_fmt(_ratio(value, base), 3)}× without hooks" if subscriber else "–",
            ]
        )
    # Four subscriber paths read each drawing (the worker's, history's two, the gateway's).
    # The difference is signed: below zero it is the machine's noise, and said so.
    difference = off - base
    extra_us = max(0.0, difference * 4 + span)
    system_ms, what = _system_cpu_ms(data)
    reference_us = system_ms * 1000
    share = extra_us / reference_us
    verdict = _mark(share <= 0.01)
    return (
        title + f"\nFrom run {run} (`bench/tracing.py`, in one process: CPU µs per drawing, median "
        f"of {len(found['subscriber_off'].get('runs', []))} runs, batches of {found.get('batch')} "
        "records that carry a traceparent). Off is every service with OTEL_EXPORTER_OTLP_ENDPOINT "
        "empty; on, spans go through the SDK's batch processor and are encoded as OTLP protobuf "
        "(the network left out).\n\n"
        + _table(["what", "CPU per drawing", "ratio"], rows)
        + f"\n\n**No collector: about {_fmt(extra_us, 1)} µs per drawing** (the subscriber "
        f"path's difference, {difference:+.2f} µs, four times, and the upload span's "
        f"{_fmt(span, 2)} µs; a difference within the runs' min–max is noise), "
        f"{share * 100:.2f} % of {_fmt(reference_us / 1000, 2)} ms "
        f"of CPU per drawing ({what}); target ≤ 1 %: {verdict}."
        + _on_cost(found, base, reference_us)
        + "\n"
    )


def _system_cpu_ms(data: dict[str, Any]) -> tuple[float, str]:
    """The system's CPU per drawing at 200 drawings/s (this run's, else the newest `bench cpu`
    run's), or the design's target for it when none was measured; and where it comes from."""
    for source, name in ((data, "this run"), *_newest_cpu()):
        row = per_drawing(source).get("200") or {}
        if row.get("total"):
            return float(row["total"]), f"the system's at 200/s, {name}"
    return 4.0, "the design's target"


def _newest_cpu() -> list[tuple[dict[str, Any], str]]:
    files = config.results_files("cpu")
    return [(json.loads(files[-1].read_text()), f"run {files[-1].stem}")] if files else []


def _on_cost(found: dict[str, Any], base: float, reference_us: float) -> str:
    """What tracing every drawing costs (TRACE_SAMPLE_RATIO=1), in the same terms."""
    on, span = _median(found.get("subscriber_on")), _median(found.get("upload_span_on"))
    if on is None or span is None:
        return ""
    cost = max(0.0, on - base) * 4 + span
    return (
        f" Tracing every drawing costs about {_fmt(cost)} µs of CPU per drawing "
        f"({cost / reference_us * 100:.0f} % of {_fmt(reference_us / 1000, 2)} ms); "
        "TRACE_SAMPLE_RATIO cuts it in proportion."
    )


def _raw_figures(data: dict[str, Any]) -> list[list[str]]:
    raw = data.get("raw_onnx") or {}
    rows = [
        [label, _spread(raw.get(key), 0, " images/s"), "–", "–"]
        for key, label in (
            ("batch1_1_thread", "raw onnxruntime, batch 1, 1 intra-op thread"),
            ("batch64_1_thread", "raw onnxruntime, batch 64, 1 intra-op thread (the limit)"),
            ("batch1_all_cores", "raw onnxruntime, batch 1, all cores"),
            ("batch64_all_cores", "raw onnxruntime, batch 64, all cores"),
        )
    ]
    rows += [
        [label, _spread(_get(data, "worker_steps", key), 0, "/s"), "–", "–"]
        for key, label in (
            ("parse_submitted_event", "worker step alone: parse a DigitSubmitted (1 core)"),
            ("decode_png", "gateway step alone: decode a canvas PNG (libpng, 1 core)"),
            (
                "decode_and_preprocess",
                "gateway step alone: decode + preprocess a canvas PNG (1 core)",
            ),
            ("build_and_encode_prediction", "worker step alone: build + encode a DigitPredicted"),
        )
    ]
    return rows


def _worker_figures(data: dict[str, Any]) -> list[list[str]]:
    raw = data.get("raw_onnx") or {}
    rows = []
    for workers, ref, ref_name in (
        ("1", _median(raw.get("batch64_1_thread")), "raw b64 1 thread"),
        ("2", _median(raw.get("batch64_all_cores")), "raw b64 all cores"),
    ):
        s = _get(data, "worker_throughput", workers, "per_s")
        rows.append(
            [
                f"inference worker ×{workers}, topic→topic (pre-filled)",
                _spread(s, 0, " predictions/s"),
                ref_name,
                f"{_fmt(_pct(_ratio(_median(s), ref)))} %",
            ]
        )
    return rows


def _ingest_figures(data: dict[str, Any]) -> list[list[str]]:
    rows = []
    base = {w: _median(_get(data, "baseline", w, "uploads_per_s")) for w in ("1", "2")}
    for workers in ("1", "2"):
        s = _get(data, "gateway_ingest", workers, "uploads_per_s")
        rows.append(
            [
                f"gateway ingest, {workers} uvicorn worker(s), wrk c=64",
                _spread(s, 0, " uploads/s"),
                f"baseline ×{workers}",
                f"{_fmt(_ratio(_median(s), base[workers]), 1)}×",
            ]
        )
    for workers in ("1", "2"):
        s = _get(data, "bare_ingest", workers, "uploads_per_s")
        rows.append(
            [
                f"REFERENCE bare ASGI app (bench/bare.py), {workers} uvicorn worker(s), wrk c=64",
                _spread(s, 0, " uploads/s"),
                "–",
                "–",
            ]
        )
    for workers in ("1", "2"):
        s = _get(data, "baseline", workers, "uploads_per_s")
        rows.append(
            [
                f"BASELINE teaching-app design, {workers} worker(s), wrk c=64",
                _spread(s, 0, " uploads/s"),
                "–",
                "–",
            ]
        )
    return rows


def _latency_figures(data: dict[str, Any]) -> list[list[str]]:
    return [
        [
            f"upload → prediction p{q} at {rate}/s offered",
            _spread(entry.get(f"p{q}_ms"), 1, " ms"),
            "–",
            "–",
        ]
        for rate, entry in (data.get("latency") or {}).items()
        for q in ("50", "95", "99")
    ]


def _rollout_figures(data: dict[str, Any]) -> list[list[str]]:
    rollout = data.get("shadow_rollout")
    if not rollout:
        return []
    alone, shadow, rate = rollout["alone"], rollout["shadow"], rollout["rate_per_s"]
    rows = [
        [
            f"shadow rollout at {rate}/s: upload → answer p{q} (champion alone before)",
            f"{_fmt(shadow[f'p{q}_ms'], 1)} ms",
            f"{_fmt(alone[f'p{q}_ms'], 1)} ms",
            f"{_fmt(_ratio(shadow[f'p{q}_ms'], alone[f'p{q}_ms']), 2)}×",
        ]
        for q in (50, 99)
    ]
    rows.append(
        [
            f"shadow rollout at {rate}/s: lost + failed uploads; shadow readings seen",
            f"{shadow['lost']} + {shadow['failed']}; {rollout['shadow_readings']} of "
            f"{shadow['sent']} sent",
            "0 + 0",
            "–",
        ]
    )
    return rows


def _swap_figures(data: dict[str, Any]) -> list[list[str]]:
    swap = data.get("hot_swap")
    if not swap:
        return []
    rows = [
        [
            "hot swap: lost + failed uploads (answered as failed before the promotion was "
            "published: load, not swap)",
            f"{swap['lost']} + {swap['failed']} "
            f"({swap.get('failed_before_promotion', '–')} before)",
            "0",
            "–",
        ],
        [
            "hot swap: longest batch wait (queue_ms) ±1 s around the swap",
            _spread(swap["max_queue_ms_around_swap"], 1, " ms"),
            "100 ms",
            f"{_fmt(_ratio(_median(swap['max_queue_ms_around_swap']), 100), 2)}×",
        ],
        [
            "hot swap: longest batch wait before the swap (same runs)",
            _spread(swap["max_queue_ms_before"], 1, " ms"),
            "–",
            "–",
        ],
        [
            "hot swap: largest gap between a worker's batches ±1 s around the swap",
            _spread(swap["max_batch_gap_ms_around_swap"], 1, " ms"),
            "–",
            "–",
        ],
    ]
    if "max_batch_gap_ms_before" in swap:
        rows.append(
            [
                "hot swap: largest gap between a worker's batches before the swap",
                _spread(swap["max_batch_gap_ms_before"], 1, " ms"),
                "–",
                "–",
            ]
        )
    return rows


def _rescore_figures(data: dict[str, Any]) -> list[list[str]]:
    rescore = data.get("rescore") or {}
    rows = []
    for workers in ("1", "2"):
        entry = rescore.get(workers)
        s = entry.get("per_s") if isinstance(entry, dict) else None
        rows.append(
            [
                f"rescore of {rescore.get('drawings', '–'):,} stored drawings, {workers} worker(s)"
                if rescore
                else f"rescore, {workers} worker(s)",
                _spread(s, 0, " drawings/s"),
                "3,000/s (2 workers)",
                f"{_fmt(_pct(_ratio(_median(s), 3000)))} %",
            ]
        )
    replay = data.get("replay") or {}
    if replay:
        records = (
            statistics.median(r["records"] for r in replay["runs"]) if replay["runs"] else None
        )
        rows.append(
            [
                f"replay into an emptied database: {_fmt(records)} records "
                f"({replay.get('drawings', 0):,} drawings and their predictions)",
                _spread(replay.get("per_s"), 0, " records/s"),
                "5,000/s",
                f"{_fmt(_pct(_ratio(_median(replay.get('per_s')), 5000)))} %",
            ]
        )
    return rows


def _memory_figures(data: dict[str, Any]) -> list[list[str]]:
    return [
        [
            f"peak RSS: {name}",
            f"{_fmt(mem['peak_rss_mb'])} MB (largest process; {mem['processes']} process(es), "
            f"{_fmt(mem['group_total_mb'])} MB together)",
            "200 MB" if name == "inference" else "–",
            f"{_fmt(_pct(_ratio(mem['peak_rss_mb'], 200)))} %" if name == "inference" else "–",
        ]
        for name, mem in sorted((data.get("memory") or {}).items())
    ]


def _plot_latency(data: dict[str, Any], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latency = data.get("latency") or {}
    if not latency:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for rate, entry in latency.items():
        for index, run in enumerate(entry["runs"]):
            cdf = run["cdf_ms"]
            if not cdf:
                continue
            ys = [i / (len(cdf) - 1) for i in range(len(cdf))]
            label = f"{rate}/s offered" if index == 0 else None
            ax.plot(
                [max(v, 0.1) for v in cdf],
                ys,
                color=f"C{list(latency).index(rate)}",
                alpha=0.85 if index == 0 else 0.4,
                label=label,
            )
    ax.axvline(15, color="grey", ls=":", lw=1)
    ax.axvline(60, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("upload → prediction on digits.predicted (ms, log scale)")
    ax.set_ylabel("fraction of uploads")
    ax.set_title(
        "End-to-end latency CDF per offered rate (each run; targets p50 15 ms, p99 60 ms)",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return True


def _plot_throughput(data: dict[str, Any], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {
        "inference worker (predictions/s)": data.get("worker_throughput"),
        "gateway ingest (uploads/s)": data.get("gateway_ingest"),
        "BASELINE teaching app (uploads/s)": data.get("baseline"),
        "REFERENCE bare ASGI app (uploads/s)": data.get("bare_ingest"),
        "rescore (drawings/s)": data.get("rescore"),
    }
    present: dict[str, dict[str, Any]] = {k: v for k, v in series.items() if v}
    if not present:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for index, (label, entry) in enumerate(present.items()):
        xs, med, low, high = [], [], [], []
        for workers in ("1", "2"):
            run = entry.get(workers)
            s = (run.get("per_s") or run.get("uploads_per_s")) if isinstance(run, dict) else None
            if s:
                xs.append(int(workers))
                med.append(s["median"])
                low.append(s["median"] - s["min"])
                high.append(s["max"] - s["median"])
        ax.errorbar(
            xs, med, yerr=[low, high], marker="o", capsize=4, label=label, color=f"C{index}"
        )
    raw = data.get("raw_onnx") or {}
    if raw.get("batch64_1_thread"):
        ax.axhline(
            raw["batch64_1_thread"]["median"],
            color="black",
            ls="--",
            lw=1,
            label="raw onnxruntime b64, 1 thread (limit)",
        )
    if raw.get("batch64_all_cores"):
        ax.axhline(
            raw["batch64_all_cores"]["median"],
            color="black",
            ls=":",
            lw=1,
            label="raw onnxruntime b64, all cores",
        )
    ax.set_xticks([1, 2])
    ax.set_xlabel("worker processes")
    ax.set_ylabel("per second (median, min–max bars)")
    ax.set_yscale("log")
    ax.set_title("Throughput vs workers", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return True


# What would close each missed target: written once, shown only when the run missed it.
REMEDIES: dict[str, str] = {
    "inference worker, topic→topic, CNN champion": (
        "The worker no longer decodes or preprocesses: it parses the event, runs the model on "
        "the 784-byte inputs of a batch and publishes one prediction per drawing. The "
        "breakdown above splits its wall time per drawing into the model's share of "
        "`session.run` and the rest; the cProfile below shows where the rest goes: "
        "FastStream's publish path and aiokafka's `send` once per prediction (about a fifth "
        "of the process), then building and validating each DigitPredicted with pydantic. "
        "What would close it: produce a batch's predictions with one aiokafka `send_batch` "
        "per partition instead of a publish per record, and build the prediction JSON without "
        "re-validating what the worker itself computed; the model at batch 64 inside the "
        "worker is close to the raw figure already."
    ),
    "gateway ingest (HTTP upload → Kafka ack)": (
        "The bare app (bench/bare.py) reads the same body under the same uvicorn and answers "
        "at once, so the ratio is what the gateway adds to HTTP. The gateway's profile shows "
        "most of it is the drawing itself: inflating the 280×280 RGBA PNG (libpng through "
        "imagecodecs; Pillow's decoder took about 1.5× its CPU), then the preprocessing that "
        "makes the model input once per drawing (alpha to ink, crop, resize, centring: see "
        "'the arithmetic of the limit'); then FastAPI's request machinery and the acks=all "
        "produce. What would close it: fewer pixels to inflate (a 140×140 export from the pad "
        "has a quarter of them; the PNG's deflate stream must be inflated whole whatever the "
        "decoder), and more gateway processes (GATEWAY_WORKERS) where cores allow; the HTTP "
        "part is within reach of the bare app already."
    ),
    "gateway ingest vs the teaching app's design": (
        "The baseline's cost is dominated by building an `InferenceSession` per request (and "
        "by its thread pool of 40 sessions competing for 2 cores); the gateway does no "
        "inference at all, so the ratio grows with the model's load time."
    ),
    "end-to-end latency at 200 uploads/s": (
        "At 200/s the gateway is the bottleneck: its CPU per drawing (table above) times 200 "
        "is about a core, most of it Python that holds a process's GIL, on 2 cores shared "
        "with every other service and the load generator; uploads queue and the latency grows "
        "with the length of the run: the figure measures the backlog, not the path (with one "
        "gateway process instead of two, p99 at 200/s was about 4 s). At 50/s, with cores to "
        "spare, p50 is about 15 ms: one Kafka round trip per hop (gateway → worker → gateway), "
        "the decode and the model. What would close it: the gateway's CPU per drawing (the "
        "decode of the canvas PNG, then FastAPI's and FastStream's per-request work)."
    ),
    "CPU per drawing, every process, at 200 drawings/s": (
        "The table and the profiles above say where it goes. The gateway is the largest part: "
        "about a third of its CPU is inflating and preprocessing the canvas PNG (the one "
        "decode of a drawing in the system), the rest FastAPI's request handling, the acks=all "
        "produce and reading every prediction back. Then the inference workers (per-batch "
        "Kafka work: at 100 drawings/s per worker a batch holds a few drawings, and the model "
        "is 0.3 ms of each), MinIO (an object per original, though history-service sends a "
        "batch's in one snowball request), history-service and Kafka. What would close it: "
        "fewer pixels per upload; the upload path without FastAPI's per-request machinery; "
        "originals kept in fewer, larger objects (a batch's drawings in one object and an "
        "index) instead of an object each."
    ),
    "highest open-loop rate with end-to-end p99 ≤ 60 ms": (
        "p99 stays within 60 ms only while the gateway has CPU to spare: above that, uploads "
        "queue in it (see the latency at 200/s). At low rates the p99 is "
        "the slowest of three hops plus the decode on a machine shared with Kafka, "
        "PostgreSQL, MinIO and the load generator. What would close it: the gateway's CPU per "
        "drawing first; then a tail at low rates that is the machine's (the load generator, "
        "Kafka, PostgreSQL and MinIO share its 2 cores)."
    ),
    "CPU of the idle stack, our services": (
        "Each service's consumers wait for records in long polls; what is left is the "
        "inference workers' and the rescore worker's model keepers and /metrics scrapes."
    ),
    "hot swap under 200 uploads/s": (
        "200 uploads/s is above what this machine sustains (see the latency at 200/s), so the "
        "failures answered before the promotion and the batch waits before the swap are the "
        "backlog, not the swap: compare the 'before' and 'around the swap' figures. The swap "
        "builds the new session in a thread beside the serving one and swaps between batches. "
        "What would close it: the throughput remedies first, so that 200/s is not an "
        "overload; `promote_cli_s` in the results shows how long the operator's CLI itself "
        "took on the busy machine."
    ),
    "rescore, 2 workers": (
        "A chunk's 784-byte inputs come from history-service in one request and are scored in "
        "one `session.run`, so the model is a small part of the time (breakdown above): the "
        "rest is publishing one prediction per drawing and history-service writing them, "
        "since a job is done only when history has written every prediction. With 2 workers "
        "on 2 cores shared with history-service, Kafka and Postgres, the second worker mostly "
        "adds contention. What would close it: larger chunks and one `send_batch` per "
        "partition for the predictions, and a COPY path for history-service's prediction "
        "writes."
    ),
    "inference worker memory": (
        "The peak is reached while a worker drains a backlog (the pre-filled runs): the "
        "consumer prefetches up to 1 MB per partition of `digits.submitted`, whose records "
        "still carry the original PNG beside the input, on top of onnxruntime, numpy, "
        "pydantic and faststream, and two sessions during a swap. What would close it: a "
        "smaller fetch for the worker (a batch of 64 needs about 1 MB in all), and "
        "`enable_cpu_mem_arena=False` for onnxruntime."
    ),
    "replay of the history topics (into an emptied database)": (
        "A replay re-reads every drawing (with its PNG, which history-service stores in MinIO "
        "again) and every prediction, and writes them in batches of HISTORY_BATCH_SIZE with "
        "one consumer for the four topics; Postgres, MinIO and Kafka share the same 2 cores. "
        "What would close it: COPY instead of executemany for the prediction rows, and "
        "skipping the MinIO write of an image that is already stored (a rebuild after `reset` "
        "keeps the objects)."
    ),
    "CNN on MNIST test (the bench's quick CNN)": (
        "The benchmark trains the CNN briefly (a subset, one epoch, no augmentation) so that "
        "`make bench` fits in 15 minutes; the architecture, and so every throughput figure, is "
        "the product's CNN, which `make train ARCH=cnn` trains to the target accuracy."
    ),
}


def _profile_table(profile: dict[str, Any] | None, key: str, top: int = 12) -> str:
    if not profile or key not in profile:
        return "_not measured_"
    rows = [
        [
            f"`{r['function']}`",
            f"{r['calls']:,}",
            f"{r['own_share'] * 100:.1f} %",
            f"{r['cumulative_share'] * 100:.1f} %",
        ]
        for r in profile[key][:top]
    ]
    return _table(["function", "calls", "own time", "cumulative"], rows)


def _breakdown_rows(data: dict[str, Any]) -> list[list[str]]:
    rows = []
    for workers in ("1", "2"):
        runs = _get(data, "worker_throughput", workers, "runs") or []
        if not runs:
            continue
        run = sorted(runs, key=lambda r: r["steady_per_s"])[len(runs) // 2]
        b = run["breakdown"]
        rows.append(
            [
                workers,
                _fmt(b["wall_ms_per_drawing_per_worker"], 3),
                _fmt(b["preprocess_ms"], 3),
                _fmt(b["inference_ms"], 3),
                _fmt(b["other_ms"], 3),
                _fmt(b["mean_batch_size"], 1),
            ]
        )
    return rows


def render(data: dict[str, Any], plots: dict[str, bool]) -> str:
    """The Markdown report."""
    meta = data["meta"]
    machine = meta["machine"]
    checks = targets(data)
    out: list[str] = []
    out.append("# Benchmarks\n")
    out.append(
        "Generated by `python -m bench report` from `bench-results/"
        f"{meta['run']}.json`; `make bench` measures everything below from a clean start "
        "(its own stack in `.data/bench`, its own ports), writes the results file and this page.\n"
    )
    note = meta.get("label") or ""
    out.append(
        f"**Run {meta['run']}** (started {meta['started_at']}, "
        f"{_fmt(meta.get('total_seconds'))} s in all). "
        + (f"{note} " if note else "")
        + f"Load average when it started: {machine['load_average_at_start']}. Every figure is the "
        f"median of {meta['sizes']['repeats']} runs (of "
        f"{meta['sizes'].get('slow_repeats', meta['sizes']['repeats'])} for latency, hot swap "
        "and rescore) with the min–max in brackets.\n"
    )
    out.append("## Targets (docs/design.md)\n")
    out.append(
        _table(
            ["what", "this run", "target", "ratio", "verdict"],
            [[t.what, t.figure, t.target, t.ratio, _mark(t.met)] for t in checks],
        )
    )
    out.append("\n## Every figure\n")
    out.append(_table(["figure", "median (min–max)", "reference", "ratio"], _figures(data)))
    out.append(cpu_section(data, plots.get("cpu", False)))
    out.append(scale_section())
    out.append(tracing_section(data))
    if data.get("errors"):
        out.append("\n**Phases that failed in this run:**\n")
        out += [f"- {name}: {error}" for name, error in sorted(data["errors"].items())]
    out.append("\n## Plots\n")
    if plots.get("latency"):
        out.append("![Latency CDF per offered rate](benchmarks/latency_cdf.png)\n")
    if plots.get("throughput"):
        out.append("![Throughput vs workers](benchmarks/throughput_vs_workers.png)\n")
    out.append("## Machine\n")
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items())
    out.append(
        _table(
            ["", ""],
            [
                ["CPU", f"{machine['cpu']}"],
                ["cores", f"{machine['cores']} ({machine['usable_cores']} usable)"],
                ["memory", f"{machine['memory_gib']} GiB"],
                ["OS", machine["os"]],
                ["Python", machine["python"]],
                ["Kafka", f"Apache Kafka {machine['kafka']} (KRaft, one broker)"],
                ["PostgreSQL", machine["postgres"]],
                ["load generator", machine["wrk"]],
                ["packages", packages],
            ],
        )
    )
    out.append(_models_section(data))
    out.append(_time_section(data))
    out.append(_missed_section(checks))
    out.append(_method_section(data))
    return "\n".join(out).rstrip() + "\n"


def _models_section(data: dict[str, Any]) -> str:
    models = data.get("models")
    if not models:
        return ""
    rows = [
        [
            m["arch"].upper(),
            f"v{m['version']}",
            f"{m['test_accuracy'] * 100:.2f} %",
            f"{m['train_images']:,} × {m['epochs']} epoch(s)",
            f"{_fmt(m['train_seconds'])} s",
        ]
        for m in (models["cnn"], models["mlp"])
    ]
    return (
        "\n## Models\n\n"
        + _table(["model", "version", "MNIST test accuracy", "trained on", "training time"], rows)
        + (
            "\n\nThe CNN is the champion for every throughput and latency figure (its architecture "
            "is the product's CNN; it is trained briefly so the run fits in 15 minutes). Hot swaps "
            "and rescores alternate between the CNN and the weak MLP.\n"
        )
    )


def _time_section(data: dict[str, Any]) -> str:
    parts = ["\n## Where the time goes\n"]
    rows = _breakdown_rows(data)
    if rows:
        parts.append(
            "From the prediction events' own timings (median run): per drawing and per "
            "worker process, the wall time (1 / throughput per worker), the preprocessing and "
            "the model's share of its batch's `session.run`; the rest is Kafka in and out, "
            "event parsing and encoding, and the event loop.\n"
        )
        parts.append(
            _table(
                [
                    "workers",
                    "wall ms/drawing",
                    "preprocess ms",
                    "model ms",
                    "other ms",
                    "mean batch",
                ],
                rows,
            )
        )
    parts.append(_ceilings(data))
    rescore_rows = _rescore_rows(data)
    if rescore_rows:
        parts.append(
            "\nRescore, from the `rescore` predictions' timings (median run per worker count): "
            "per drawing and per worker, fetching the image from MinIO (a chunk's concurrent "
            "GETs divided by its size), preprocessing, the model; the rest is publishing, "
            "history-service's writes until done == total, planning and idle time.\n"
        )
        parts.append(
            _table(
                ["workers", "wall ms/drawing", "fetch ms", "preprocess ms", "model ms", "other ms"],
                rescore_rows,
            )
        )
    profiles = data.get("profiles") or {}
    for name, title in (
        ("inference_worker", "inference worker (cProfile, one worker draining a pre-filled topic)"),
        ("gateway", "gateway (cProfile, one process under wrk at c=64)"),
    ):
        profile = profiles.get(name)
        if not profile:
            continue
        rate = profile.get("steady_per_s_under_profiler") or profile.get(
            "uploads_per_s_under_profiler"
        )
        parts.append(f"\n### {title}\n")
        parts.append(
            f"Under the profiler: {_fmt(rate)}/s (cProfile slows Python code, not native code, "
            "so shares of native work are understated). Shares are of the process's total "
            "profiled time.\n"
        )
        parts.append("By cumulative time (the service's own steps and the libraries they call):\n")
        parts.append(_profile_table(profile, "by_cumulative_time"))
        parts.append("\nBy own time:\n")
        parts.append(_profile_table(profile, "by_own_time"))
    return "\n".join(parts) + "\n"


def _rescore_rows(data: dict[str, Any]) -> list[list[str]]:
    rows = []
    for workers in ("1", "2"):
        runs = [r for r in _get(data, "rescore", workers, "runs") or [] if r.get("breakdown")]
        if not runs:
            continue
        b = sorted(runs, key=lambda r: r["per_s"])[len(runs) // 2]["breakdown"]
        rows.append(
            [
                workers,
                _fmt(b["wall_ms_per_drawing_per_worker"], 3),
                _fmt(b["fetch_ms"], 3),
                _fmt(b["preprocess_ms"], 3),
                _fmt(b["inference_ms"], 3),
                _fmt(b["other_ms"], 3),
            ]
        )
    return rows


def _ceilings(data: dict[str, Any]) -> str:
    """What the per-step costs alone allow, before any Kafka or HTTP work."""
    raw64 = _median(_get(data, "raw_onnx", "batch64_1_thread"))
    prep = _median(_get(data, "worker_steps", "decode_and_preprocess"))
    decode = _median(_get(data, "worker_steps", "decode_png"))
    if not raw64 or not prep:
        return ""
    model_ms, prep_ms = 1000 / raw64, 1000 / prep
    text = (
        f"\n**The arithmetic of the limit.** On this machine, in this run, the model costs "
        f"{model_ms:.3f} ms per drawing at batch 64 (1 thread), while decoding and "
        f"preprocessing one canvas PNG costs {prep_ms:.3f} ms"
    )
    if decode:
        text += f" (the PNG decode alone {1000 / decode:.3f} ms)"
    text += (
        ". That is done once per drawing, by the gateway, which must decode an upload anyway "
        "to refuse a blank or broken one; the workers run only the model on the 784-byte "
        f"input the event carries. So {prep_ms:.1f} ms of the CPU-per-drawing target's 4 ms "
        "is spent before a drawing leaves the gateway"
    )
    text += (
        f", and one gateway core can accept at most about {prep:,.0f} uploads/s before any "
        "HTTP or Kafka work. "
    )
    return text + "\n"


def _missed_section(checks: list[Target]) -> str:
    missed = [t for t in checks if t.met is False]
    if not missed:
        return "\n## Missed targets\n\nNone in this run.\n"
    parts = ["\n## Missed targets: where the time goes and what would close it\n"]
    for t in missed:
        parts.append(f"**{t.what}** ({t.figure}; target {t.target}). {REMEDIES.get(t.what, '')}\n")
    return "\n".join(parts)


def _method_section(data: dict[str, Any]) -> str:
    sizes = data["meta"]["sizes"]
    phases = ", ".join(
        f"{name} {_fmt(seconds)}"
        for name, seconds in (data["meta"].get("phase_seconds") or {}).items()
    )
    phases += f"; {_fmt(data['meta'].get('total_seconds'))} in all, stack and training included"
    return f"""
## How each figure is measured

Inputs are the first {sizes["inputs"]} MNIST test images rendered as the browser canvas sends them
(280×280 RGBA PNG, dark strokes on a transparent background; mean upload
{data["meta"].get("upload_mean_bytes", "–")} bytes).

1. **Limit**: `session.run` of the champion's ONNX on preprocessed inputs for
   {sizes["raw_seconds"]} s per run, with the workers' session options (sequential, 1 inter-op
   thread, all graph
   optimisations), at 1 intra-op thread (what one worker uses, `ONNX_THREADS=1`) and all cores.
2. **Worker topic→topic**: {sizes["worker_drawings"]:,} `DigitSubmitted` events are published
   directly (aiokafka, acks=all) while no worker runs; then 1 or 2 workers start and a consumer of
   our own
   waits for every prediction on `digits.predicted`. The figure is the steady rate between the
   10th and 90th percentile of the predictions' `occurred_at`, so process start, model load and
   group join do not count (they are in the results file as `start_to_last_s`).
3. **Gateway ingest**: `wrk` with {sizes["ingest_connections"]} connections for
   {sizes["ingest_seconds"]} s (after a 2 s warm-up) posting raw `image/png` bodies, cycling
   through the inputs; a 202 means
   Kafka acknowledged the drawing (acks=all). Only the gateway runs (`RATE_LIMIT_PER_MINUTE=0`,
   `GATEWAY_WORKERS` 1 or 2); uploads per second count 2xx answers only.
4. **Latency**: an open-loop generator (its own process, keep-alive connections, sends on a fixed
   schedule whatever the answers) at {", ".join(str(r) for r in sizes["rates"])} uploads/s for
   {sizes["rate_seconds"]} s each, against the whole system (gateway processes ×{
        sizes.get("system_gateways", 1)
    }, inference workers ×2, history-service). Latency is from
   the **scheduled** send time to the prediction's arrival at a consumer of `digits.predicted`
   in the benchmark process (so a stalled server cannot hide requests it did not take). The
   results file also has the server-side part (`submitted_at` →
   the prediction's `occurred_at`) and the HTTP 202 time.
5. **Hot swap**: the same system at {sizes["swap_rate"]} uploads/s for
   {sizes["swap_seconds"]} s; at 40 % of the run `mnistream promote --force` switches between the
   CNN and the MLP. Lost = answered 202
   but no live prediction within 60 s; failed = any other answer. A worker's batches are told
   apart by their shared timings; "longest batch wait" is the largest `queue_ms` of the batches
   within ±1 s of that worker's first batch on the new model, compared with the same figure
   before the swap.
6. **Shadow rollout**: a second quick CNN (another seed) is trained and registered; two fresh
   workers serve the CNN champion alone at {sizes["rollout_rate"]} uploads/s for
   {sizes["rollout_seconds"]} s, then `mnistream shadow` starts a shadow rollout of the second
   CNN and, once every worker's `/readyz` says its candidate is loaded, the same load runs again:
   every drawing is read by both CNNs, the champion's answer first. Memory is each worker's
   VmHWM after each run (the largest of the two workers), so the second figure is the peak with
   two CNNs loaded; latency is the answers' (the champion's), scheduled send to prediction seen.
   The workers' peaks are kept apart from the one-model memory figure.
7. **Rescore**: history is reset, exactly {sizes["rescore_drawings"]:,} drawings are stored
   through the real path (`DigitSubmitted` events consumed by history-service into Postgres and
   MinIO); then each
   run promotes the other model and times from the promotion's `promoted_at` to the first
   `/api/rescore-jobs/{{id}}` answer with done == total (polled every 100 ms). Rescore workers
   start before the promotion and have joined their groups. The first run per worker count
   includes loading that model; later runs reuse the workers' model cache.
8. **Baseline** (`bench/baseline/`, not part of the product): the teaching app's design under
   the same `wrk` load: a synchronous FastAPI endpoint that creates an `InferenceSession` per
   request, resizes the canvas naively to 28×28, runs the CNN and inserts a row (image,
   prediction) into Postgres through SQLAlchemy + psycopg2 inside the request.
9. **Memory**: VmHWM (peak resident set) from `/proc` of every process of each service, read
   just before it is stopped; the highest seen across the run.

Phase durations in this run (seconds): {phases}.

Other work on the machine (see the run's note and load average at the top) lowers absolute
figures and widens their min–max; ratios measured in the same run (worker vs raw limit, gateway
vs baseline) are less sensitive to it. Profiles come from separate runs under cProfile after the
measured ones.
"""


def newest(selection: str = "all") -> Path:
    """The newest results file of a selection."""
    files = config.results_files(selection)
    if not files:
        raise FileNotFoundError(f"no {selection} results in {config.RESULTS}; run `make bench`")
    return files[-1]


def write_report(results: Path | None = None) -> str:
    """Write docs/benchmarks.md and the plots from a results file; returns what it wrote."""
    path = results or newest()
    data = json.loads(path.read_text())
    PLOTS.mkdir(parents=True, exist_ok=True)
    plots = {
        "latency": _plot_latency(data, PLOTS / "latency_cdf.png"),
        "throughput": _plot_throughput(data, PLOTS / "throughput_vs_workers.png"),
        "cpu": plot_cpu(data, PLOTS / "cpu_per_drawing.png"),
    }
    MD.write_text(render(data, plots))
    return f"wrote {MD} and plots in {PLOTS} from {path}"


def summary_table(results: Path) -> str:
    """The targets table for the terminal."""
    data = json.loads(results.read_text())
    return _table(
        ["what", "this run", "target", "ratio", "verdict"],
        [[t.what, t.figure, t.target, t.ratio, _mark(t.met)] for t in targets(data)],
    )
