"""The "History at scale" section of docs/benchmarks.md, from the newest `scale` results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import config
from bench.stats import markdown_table

# docs/design.md / issue targets: reads p99, planner peak RSS, `mnistream status`.
READ_P99_MS = 50.0
PLANNER_RSS_MB = 200.0
STATUS_S = 1.5


def newest_scale() -> Path | None:
    """The newest scale results, in bench-results/ or committed in docs/benchmarks/."""
    found = config.results_files("scale")
    return found[-1] if found else None


def scale_section(path: Path | None = None) -> str:
    """Markdown for the newest scale run (or a line saying there is none)."""
    path = path or newest_scale()
    if path is None:
        return "\n## History at scale\n\nNo scale run yet: `make bench-scale`.\n"
    data = json.loads(path.read_text())
    if "scale" not in data:
        error = data.get("errors", {}).get("scale", "no figures")
        return f"\n## History at scale\n\nThe scale run {path.name} failed: {error}\n"
    scale = data["scale"]
    runs = scale["scales"]
    names = [f"{r['drawings']:,} drawings" for r in runs]
    rows = []
    for read in runs[0]["reads"]:
        cells = [f"{r['reads'][read]['p50_ms']} / {r['reads'][read]['p99_ms']}" for r in runs]
        worst = max(r["reads"][read]["p99_ms"] for r in runs)
        if "/api/digits" in read:  # keyset-paged from the start: shown, not a target
            rows.append([f"`{read}` p50 / p99 ms", *cells, "", ""])
            continue
        rows.append(
            [
                f"`{read}` p50 / p99 ms",
                *cells,
                f"p99 ≤ {READ_P99_MS:g}",
                _mark(worst <= READ_P99_MS),
            ]
        )
    rows.append(
        [
            "before: v2's agreement computed from the rows (s, one query)",
            *[f"{r['old_agreement_read_s']}" for r in runs],
            "",
            "",
        ]
    )
    worst_status = max(r["status"]["median_s"] for r in runs)
    rows.append(
        [
            "`mnistream status` median (max) s",
            *[f"{r['status']['median_s']} ({r['status']['max_s']})" for r in runs],
            f"≤ {STATUS_S:g}",
            _mark(worst_status <= STATUS_S),
        ]
    )
    worst_rss = max(r["planner"]["peak_rss_mb"] for r in runs)
    rows.append(
        [
            "planner: peak RSS MB (at start)",
            *[f"{r['planner']['peak_rss_mb']} ({r['planner']['rss_before_mb']})" for r in runs],
            f"≤ {PLANNER_RSS_MB:g}",
            _mark(worst_rss <= PLANNER_RSS_MB),
        ]
    )
    rows.append(
        [
            "planner: seconds (drawings/s)",
            *[f"{r['planner']['seconds']} ({r['planner']['drawings_per_s']:,})" for r in runs],
            "",
            "",
        ]
    )
    for step in ("seed_s", "migration_0005_s", "migration_0006_s", "vacuum_analyze_s"):
        if any(step not in r for r in runs):
            continue  # a step that results from before it did not time
        rows.append([f"{step.removesuffix('_s')} (s)", *[f"{r[step]}" for r in runs], "", ""])
    out = [
        "\n## History at scale\n",
        f"From `{path.relative_to(config.ROOT)}` (`make bench-scale`): a database of "
        "its own per "
        "scale, seeded in SQL with a history of that size (every drawing with its model input, a "
        "live prediction by v1 and a rescore by v2 that reads one in ten differently, a label on "
        "one in a hundred, the rescore job with an item per drawing), migrated to head (migration "
        "0005 fills the kept figures, 0006 keeps the flips of the ledger's comparisons), then "
        "read through the gateway by 4 concurrent clients (160 requests a read). The planner "
        "plans a job over every drawing into a bench topic in a process of its own. "
        "`/api/models/2` returns its default page of 50 flips (the models panel asks for none, "
        "`flips_limit=0`); its second page asks for 50 too.\n",
        markdown_table(["figure", *names, "target", "verdict"], rows),
    ]
    projection = scale["projection"]
    per = projection["bytes_per_drawing"]
    at = projection["at_100M_gb"]
    out.append(
        "\n**Bytes per drawing, and at 100 million drawings** (" + projection["note"] + "):\n"
    )
    out.append(
        markdown_table(
            ["store", "bytes per drawing", "at 100M drawings"],
            [
                [
                    "PostgreSQL (tables, indexes, TOAST)",
                    f"{per['postgres']:,}",
                    f"{at['postgres']:,} GB",
                ],
                ["MinIO (the original PNG, on disk)", f"{per['minio']:,}", f"{at['minio']:,} GB"],
                [
                    "Kafka (submitted + live + one rescore record)",
                    f"{per['kafka']:,}",
                    f"{at['kafka']:,} GB",
                ],
                ["Kafka, each further promotion", f"{per['kafka_per_further_promotion']:,}", ""],
            ],
        )
    )
    largest = max(runs, key=lambda r: r["drawings"])
    tables = ", ".join(
        f"{name} {size / largest['drawings']:.0f} B"
        for name, size in sorted(largest["table_bytes"].items(), key=lambda kv: -kv[1])
        if size / largest["drawings"] >= 1
    )
    out.append(f"\nPostgreSQL per drawing by table at {largest['drawings']:,}: {tables}.\n")
    if "upkeep" in scale:
        out.append(_upkeep(scale["upkeep"]))
    return "\n".join(out)


def _upkeep(found: dict[str, Any]) -> str:
    """The writer's cost per drawing as versions accumulate (bench/upkeep.py)."""
    per = found["ms_per_drawing"]
    ratio = found["ratio_last_to_second"]
    linear = len(per) / 2
    return (
        f"\n**The writer as versions accumulate** (bench/upkeep.py): {found['drawings']:,} "
        f"drawings read by {len(per)} versions one after another, each promoted over the one "
        "before, written in batches of "
        f"{found['batch']}. ms per drawing by version: {', '.join(f'{ms:g}' for ms in per)}. "
        f"Version {len(per)} costs {ratio:g}× version 2 (target ≤ {linear:g}×, linear in the "
        f"versions: {_mark(ratio <= linear)}); {found['flip_rows']:,} flip rows kept.\n"
    )


def _mark(met: bool) -> str:
    return "met" if met else "**missed**"
