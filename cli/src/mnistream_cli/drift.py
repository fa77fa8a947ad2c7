"""`mnistream drift`: live drawings and the champion's readings against its reference."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from mnistream_common.history_api import DriftOut
from mnistream_common.history_client import (
    HistoryClient,
    HistoryRefusedError,
    HistoryUnavailableError,
)
from rich.table import Table

from mnistream_cli.operate import console, fail
from mnistream_cli.settings import Settings


def drift(
    last: Annotated[
        int | None,
        typer.Option(
            min=50, max=5000, help="Drawings in the short window (default: history-service's)."
        ),
    ] = None,
    check: Annotated[
        bool, typer.Option(help="Exit with status 3 when any signal is past its threshold.")
    ] = False,
) -> None:
    """Drift of the live drawings against the champion's training data: per signal and window,
    the population stability index (PSI) and its threshold; per serving version, the accuracy
    estimated from its confidence beside the accuracy measured on labeled drawings."""
    report = asyncio.run(_drift(Settings(), last))
    show_drift(report)
    if check and report.alarms:
        raise typer.Exit(3)


async def _drift(settings: Settings, last: int | None) -> DriftOut:
    async with HistoryClient.at(settings.history_url) as history:
        try:
            return await history.drift(last)
        except (HistoryUnavailableError, HistoryRefusedError) as exc:
            raise fail(f"drift is not available: {exc}") from exc


def show_drift(report: DriftOut) -> None:
    """The signals' table, the versions' table, and the alarms in words."""
    if report.note:
        console.print(f"[yellow]{report.note}[/]")
        return
    console.print(f"champion v{report.champion_version}; reference: {report.reference}")
    table = Table(title="drift signals (PSI against the reference)")
    for column in ("window", "signal", "kind", "drawings"):
        table.add_column(column, justify="right" if column == "drawings" else "left")
    table.add_column("score", justify="right")
    table.add_column("threshold", justify="right")
    table.add_column("state")
    for s in report.signals:
        state = "[red]DRIFT[/]" if s.drifted else ("too few" if s.score is None else "ok")
        score = "-" if s.score is None else f"{s.score:.3f}"
        table.add_row(s.window, s.signal, s.kind, str(s.drawings), score, f"{s.threshold:g}", state)
    console.print(table)
    versions = Table(title="accuracy: estimated from confidence, measured on labels")
    for column in ("window", "version", "readings", "estimated", "labeled", "measured", "gap"):
        versions.add_column(column, justify="left" if column == "window" else "right")
    versions.add_column("state")
    for v in report.versions:
        versions.add_row(
            v.window,
            f"v{v.version}",
            str(v.readings),
            _share(v.estimated_accuracy),
            str(v.labeled),
            _share(v.measured_accuracy),
            "-" if v.gap is None else f"{v.gap:+.3f}",
            "[red]GAP[/]" if v.drifted else ("too few labels" if v.gap is None else "ok"),
        )
    console.print(versions)
    alarms = report.alarms
    console.print(
        f"[bold red]drift:[/] {'; '.join(alarms)}" if alarms else "no signal past its threshold"
    )


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
