"""Generate mnistream's Grafana dashboard with Grafana's own typed SDK (grafana-foundation-sdk).

    uv run python scripts/dashboard.py infra/grafana/dashboards          # write
    uv run python scripts/dashboard.py infra/grafana/dashboards --check  # fail if it differs

The panels answer "is anything wrong right now?" from the Prometheus that OBSERVABILITY=1 runs
(infra/prometheus): traffic by model version, end-to-end latency, batch sizes, lag, dead
letters, rescores, drift and firing alerts, CPU and memory per process.
tests/e2e/test_prometheus.py runs each query against the test stack's Prometheus.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DashboardLink,
    Row,
    TextBoxVariable,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.timeseries import Panel
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DashboardLinkType, DataSourceRef

FILE = "mnistream.json"
UID = "mnistream-overview"
DATASOURCE = "prometheus"  # the uid infra/grafana/provisioning/datasources/prometheus.yml gives
RATE = "$__rate_interval"  # Grafana's window for rate(); the test stack's check uses 1m
# The uploads of the panel's time range in Jaeger's UI, slowest first: from a latency spike to
# the traces of the drawings in it (`$jaeger` is the dashboard's variable; Jaeger takes µs).
SLOW_TRACES = (
    "${jaeger}/search?service=gateway&operation=POST%20%2Fapi%2Fpredictions"
    "&start=${__from}000&end=${__to}000&limit=100&lookback=custom"
)


@dataclass(frozen=True)
class Query:
    """One line of a panel."""

    expr: str
    legend: str


@dataclass(frozen=True)
class Chart:
    """One time-series panel."""

    title: str
    unit: str
    queries: tuple[Query, ...]
    description: str
    link: tuple[str, str] | None = None  # a panel link: its title and URL


def quantile(q: float, histogram: str, selector: str = "") -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket{selector}[{RATE}])))"


ROWS: dict[str, tuple[Chart, ...]] = {
    "Traffic": (
        Chart(
            "Uploads per second",
            "reqps",
            (Query(f"sum by (outcome) (rate(mnistream_uploads_total[{RATE}]))", "{{outcome}}"),),
            "The gateway's answers: predicted (within the wait), accepted, or rejected_<status>.",
        ),
        Chart(
            "Predictions per second by model version",
            "ops",
            (
                Query(
                    f"sum by (model_version, kind) (rate(mnistream_predictions_total[{RATE}]))",
                    "v{{model_version}} {{kind}}",
                ),
            ),
            "Published by the inference workers: live answers, canary and shadow readings.",
        ),
        Chart(
            "Upload to prediction (ms)",
            "ms",
            (
                Query(
                    quantile(0.5, "mnistream_upload_to_prediction_ms", '{service="gateway"}'), "p50"
                ),
                Query(
                    quantile(0.99, "mnistream_upload_to_prediction_ms", '{service="gateway"}'),
                    "p99",
                ),
            ),
            "From submitted_at to the live prediction reaching the gateway. The panel's link "
            "opens the traces of the uploads in its time range in Jaeger.",
            ("Traces of these uploads (Jaeger)", SLOW_TRACES),
        ),
        Chart(
            "Batch size",
            "none",
            (
                Query(
                    f"sum(rate(mnistream_batch_size_sum[{RATE}])) / "
                    f"sum(rate(mnistream_batch_size_count[{RATE}]))",
                    "mean",
                ),
                Query(quantile(0.99, "mnistream_batch_size"), "p99"),
            ),
            "Drawings per session.run in the inference workers.",
        ),
    ),
    "Backlog and failures": (
        Chart(
            "Consumer lag by group",
            "short",
            (Query("sum by (group) (mnistream_consumer_lag)", "{{group}}"),),
            "Records not consumed yet, summed over each group's members.",
        ),
        Chart(
            "Dead letters (last 5 min)",
            "short",
            (
                Query(
                    "sum by (service, topic) (increase(mnistream_dead_letters_total[5m]))",
                    "{{service}} {{topic}}",
                ),
            ),
            "Records sent to digits.deadletter; `mnistream replay deadletter` after a fix.",
        ),
        Chart(
            "Rescored drawings per second",
            "ops",
            (
                Query(
                    f"sum by (model_version, kind) (rate(mnistream_rescored_total[{RATE}]))",
                    "v{{model_version}} {{kind}}",
                ),
            ),
            "Rescore and evaluation jobs at work (`mnistream status` shows each job's progress).",
        ),
        Chart(
            "Alerts firing",
            "short",
            (Query('count by (alertname) (ALERTS{alertstate="firing"})', "{{alertname}}"),),
            "infra/prometheus/alerts.yml; /api/v1/alerts says why.",
        ),
    ),
    "Model and processes": (
        Chart(
            "Drift score (PSI, last drawings)",
            "none",
            (
                Query(
                    'max by (signal) (mnistream_drift_score{window!="last hour"})',
                    "{{signal}}",
                ),
                Query("max(mnistream_drift_threshold)", "threshold"),
            ),
            "Against the champion's training data (docs/drift.md); above the threshold: drift.",
        ),
        Chart(
            "Model version per inference worker",
            "none",
            (
                Query("mnistream_model_version", "{{process}}"),
                Query("max(mnistream_champion_version)", "ledger's champion"),
            ),
            "Each worker's model beside the ledger's champion.",
        ),
        Chart(
            "CPU per process (cores)",
            "none",
            (Query(f"rate(process_cpu_seconds_total[{RATE}])", "{{process}}"),),
            "Seconds of CPU per second.",
        ),
        Chart(
            "Memory per process",
            "bytes",
            (Query("process_resident_memory_bytes", "{{process}}"),),
            "Resident set size.",
        ),
    ),
}


def build() -> Dashboard:
    """The dashboard: three rows of four panels."""
    board = (
        Dashboard("mnistream")
        .uid(UID)
        .tags(["mnistream"])
        .refresh("10s")
        .time("now-30m", "now")
        .description("Is anything wrong right now? Traffic, latency, backlog, failures, drift.")
        .with_variable(
            TextBoxVariable("jaeger")
            .label("Jaeger UI")
            .description("Where the panels' trace links go (compose: Jaeger on :16686).")
            .default_value("http://127.0.0.1:16686")
        )
    )
    source = DataSourceRef(type_val="prometheus", uid=DATASOURCE)
    for row, charts in ROWS.items():
        board = board.with_row(Row(row))
        for chart in charts:
            panel = (
                Panel()
                .title(chart.title)
                .description(chart.description)
                .unit(chart.unit)
                .datasource(source)
                .height(8)
                .span(6)
            )
            if chart.link is not None:
                title, url = chart.link
                panel = panel.links(
                    [DashboardLink(title).type(DashboardLinkType.LINK).url(url).target_blank(True)]
                )
            for index, query in enumerate(chart.queries):
                panel = panel.with_target(
                    Dataquery()
                    .ref_id("ABCDEFGH"[index])
                    .expr(query.expr)
                    .legend_format(query.legend)
                    .datasource(source)
                )
            board = board.with_panel(panel)
    return board


def render() -> str:
    """The dashboard's JSON as committed: sorted keys, a trailing newline."""
    document = json.loads(JSONEncoder(sort_keys=True, indent=2).encode(build().build()))
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--check", action="store_true", help="Fail if the file is out of date.")
    args = parser.parse_args()
    path: Path = args.folder / FILE
    text = render()
    if args.check:
        if not path.exists() or path.read_text() != text:
            print(f"out of date: {path}; run `make dashboard`", file=sys.stderr)
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
