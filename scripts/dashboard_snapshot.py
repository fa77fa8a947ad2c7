"""Draw the Grafana dashboard's panels (infra/grafana/dashboards/mnistream.json) from a running
Prometheus, as a PNG: each panel's queries over the last minutes, laid out on the dashboard's
grid. Grafana cannot be built or run here (docs/observability.md); this shows what its panels
show, from the same queries against the same server. Not Grafana's rendering.

    uv run python scripts/dashboard_snapshot.py --prometheus http://127.0.0.1:9090 out.png
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

DASHBOARD = Path(__file__).parent.parent / "infra/grafana/dashboards/mnistream.json"
STEP_S = 5
RATE_WINDOW = "30s"  # what Grafana's $__rate_interval is at a 5 s scrape and step


def legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's legend format: {{label}} replaced by the series' value of that label."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip()


def query_range(client: httpx.Client, expr: str, start: float, end: float) -> list[Any]:
    expr = expr.replace("$__rate_interval", RATE_WINDOW).replace("$__interval", f"{STEP_S}s")
    answer = client.get(
        "/api/v1/query_range", params={"query": expr, "start": start, "end": end, "step": STEP_S}
    )
    answer.raise_for_status()
    return list(answer.json()["data"]["result"])


def draw(prometheus: str, out: Path, minutes: float) -> int:
    document = json.loads(DASHBOARD.read_text())
    panels = [p for p in document["panels"] if p["type"] != "row"]
    end = time.time()
    start = end - minutes * 60
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    figure = plt.figure(figsize=(24, rows * 0.55))
    grid = figure.add_gridspec(rows, 24, hspace=1.6, wspace=1.2)
    empty = []
    with httpx.Client(base_url=prometheus, timeout=30) as client:
        for panel in panels:
            at = panel["gridPos"]
            axes = figure.add_subplot(
                grid[at["y"] : at["y"] + at["h"] - 1, at["x"] : at["x"] + at["w"] - 1]
            )
            axes.set_title(panel["title"], fontsize=11, loc="left")
            drawn = 0
            for target in panel["targets"]:
                for series in query_range(client, target["expr"], start, end):
                    times = [(float(t) - end) / 60 for t, _ in series["values"]]
                    values = [float(v) for _, v in series["values"]]
                    label = legend(target.get("legendFormat", ""), series["metric"]) or None
                    axes.plot(times, values, label=label, linewidth=1.4)
                    drawn += 1
            if drawn:
                axes.legend(fontsize=7, loc="upper left")
            else:
                empty.append(panel["title"])
                axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes)
            axes.set_xlim(-minutes, 0)
            axes.set_xlabel("minutes ago", fontsize=8)
            axes.tick_params(labelsize=8)
            axes.grid(alpha=0.3)
    figure.suptitle(
        f"{document['title']}: the dashboard's queries against {prometheus}, last {minutes:g} min "
        "(drawn with matplotlib, not Grafana)",
        fontsize=13,
        y=0.93,
    )
    figure.savefig(out, dpi=90, bbox_inches="tight")
    print(f"wrote {out}; panels with no data: {empty or 'none'}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--minutes", type=float, default=10)
    args = parser.parse_args()
    try:
        return draw(args.prometheus, args.out, args.minutes)
    except httpx.HTTPError as exc:
        print(f"Prometheus at {args.prometheus} did not answer: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
