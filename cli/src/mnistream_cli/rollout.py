"""`canary`, `shadow`, `abort`, `rollout status`: releasing a candidate on live traffic first.

A rollout step is a record of the promotion ledger (`ModelRollout`), checked here against the
ledger's state (folded as every worker folds it) before it is published, and read back after:
a step that a race made moot (another operator's rollout landed first) is reported as not
applied, never as done.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Annotated

import typer
from mnistream_common.events import ModelRollout, RolloutMode
from mnistream_common.history_api import RolloutOut, VersionFigures
from mnistream_common.history_client import (
    HistoryClient,
    HistoryRefusedError,
    HistoryUnavailableError,
)
from mnistream_common.kafka import publish_ledger, read_ledger_entries
from mnistream_common.ledger import LedgerState, Rollout, fold
from rich.table import Table

from mnistream_cli.operate import complete_rollout, console, fail, show_gate
from mnistream_cli.promotion import Promoter, PromotionError, promoted_by
from mnistream_cli.registry import RegistryError
from mnistream_cli.settings import Settings

rollout_app = typer.Typer(help="The running canary or shadow rollout.", no_args_is_help=True)


def describe(rollout: Rollout) -> str:
    """One line: which rollout, of which version, beside which champion."""
    start = rollout.started
    share = (
        "reads every drawing, answers none"
        if rollout.shadow
        else f"answers {rollout.percent:g} % of live drawings"
    )
    return (
        f"{start.mode} {rollout.rollout_id} of v{start.candidate.version} beside champion "
        f"v{start.champion_version}: the candidate {share}"
    )


async def ledger_state(settings: Settings) -> LedgerState:
    """The ledger's state now, as every worker folds it."""
    try:
        return fold(await read_ledger_entries(settings))
    except Exception as exc:  # Kafka down: say so plainly
        raise fail(f"Kafka at {settings.kafka_bootstrap_servers} is unreachable ({exc})") from exc


def canary(
    version: Annotated[int, typer.Argument(help="Registered version to release.")],
    percent: Annotated[
        float,
        typer.Option(min=0.01, max=100, help="Share of live drawings the candidate answers."),
    ] = 10.0,
    reason: Annotated[str, typer.Option(help="Why, for the ledger.")] = "",
    force: Annotated[bool, typer.Option(help="Start even if the quality gate objects.")] = False,
) -> None:
    """Let VERSION answer PERCENT % of live drawings beside the champion (the same drawing
    always goes to the same version). Run again with another --percent to change the share of
    the running canary; `mnistream promote` completes it, `mnistream abort` ends it."""
    settings = Settings()
    asyncio.run(start(settings, Promoter(settings), version, "canary", percent, reason, force))


def shadow(
    version: Annotated[int, typer.Argument(help="Registered version to read beside the champion.")],
    reason: Annotated[str, typer.Option(help="Why, for the ledger.")] = "",
    force: Annotated[bool, typer.Option(help="Start even if the quality gate objects.")] = False,
) -> None:
    """Let VERSION read every live drawing too, answering none: people see the champion's
    answers, and the history compares the two on the same drawings. `mnistream abort` ends it."""
    settings = Settings()
    asyncio.run(start(settings, Promoter(settings), version, "shadow", 100.0, reason, force))


async def start(
    settings: Settings,
    promoter: Promoter,
    version: int,
    mode: RolloutMode,
    percent: float,
    reason: str,
    force: bool,
) -> None:
    state = await ledger_state(settings)
    if state.champion is None:
        raise fail(
            "nothing is promoted yet: a rollout runs beside a champion (`mnistream promote`)"
        )
    running = state.rollout
    if running is not None:
        same = running.started.candidate.version == version and running.started.mode == mode
        if same and mode == "canary":
            await _change_share(settings, running, percent, reason)
            return
        raise fail(
            f"a rollout is running ({describe(running)}): `mnistream abort` ends it, "
            f"`mnistream promote {running.started.candidate.version}` completes it"
        )
    if version == state.champion.model.version:
        raise fail(f"v{version} is the champion: a {mode} releases another version beside it")
    try:
        report = await promoter.check(version)
    except (RegistryError, PromotionError) as exc:
        raise fail(str(exc)) from exc
    show_gate(report)
    if report.objections and not force:
        raise fail(
            "refused: "
            + "; ".join(report.objections)
            + f". Use --force to start the {mode} anyway."
        )
    candidate = report.candidate
    step = ModelRollout(
        rollout_id=uuid.uuid4(),
        action="started",
        mode=mode,
        candidate=candidate.ref,
        onnx_uri=candidate.onnx_uri,
        architecture=candidate.architecture,
        champion_version=state.champion.model.version,
        percent=percent,
        requested_by=promoted_by(),
        reason=reason,
    )
    rollout = await _publish(settings, step)
    console.print(
        f"[bold green]{mode} started[/]: {describe(rollout)}. Workers load the candidate now; "
        "follow it with `mnistream rollout status`"
    )


async def _change_share(settings: Settings, running: Rollout, percent: float, reason: str) -> None:
    if percent == running.percent:
        console.print(f"the canary already has {percent:g} %: nothing to change")
        return
    step = running.step("changed", by=promoted_by(), reason=reason, percent=percent)
    rollout = await _publish(settings, step)
    console.print(f"[bold green]share changed[/]: {describe(rollout)}")


def abort(
    reason: Annotated[str, typer.Option(help="Why, for the ledger.")] = "aborted",
) -> None:
    """End the running canary or shadow rollout: the champion serves alone again."""
    asyncio.run(_abort(Settings(), reason))


async def _abort(settings: Settings, reason: str) -> None:
    state = await ledger_state(settings)
    running = state.rollout
    if running is None:
        raise fail("no rollout is running")
    await _publish(settings, running.step("aborted", by=promoted_by(), reason=reason))
    console.print(
        f"[bold green]aborted[/] {running.started.mode} {running.rollout_id} of "
        f"v{running.started.candidate.version}: the champion answers every drawing again"
    )


async def _publish(settings: Settings, step: ModelRollout) -> Rollout:
    """Publish a step (acks=all), then read the ledger back: the rollout as that step left it,
    or an error saying what landed first (the step itself is then ignored by every reader)."""
    try:
        offset = await publish_ledger(settings, step, step.candidate.name)
    except Exception as exc:
        raise fail(f"publishing the rollout step failed ({exc!r}); nothing changed") from exc
    state = await ledger_state(settings)
    if step.action == "aborted":
        mine = [e for e in state.ended if e.offset == offset and e.outcome == "aborted"]
        if not mine:
            ended = [e for e in state.ended if e.rollout.rollout_id == step.rollout_id]
            why = f"it had ended already ({ended[-1].outcome})" if ended else "it was not running"
            raise fail(f"the abort was not applied: {why}; see `mnistream rollout status`")
        return mine[0].rollout
    running = state.rollout
    applied = running is not None and running.rollout_id == step.rollout_id
    if step.action == "started":
        applied = applied and running is not None and running.started_offset == offset
    if not applied or running is None:
        now = describe(running) if running else "no rollout runs"
        raise fail(f"the step was not applied: the ledger changed meanwhile ({now})")
    return running


@rollout_app.command("status")
def status() -> None:
    """The running rollout (or the last one) with its live verdict: drawings read by each
    version, accuracy on user labels with 95 % intervals, agreement, latency."""
    asyncio.run(_status(Settings()))


async def _status(settings: Settings) -> None:
    state = await ledger_state(settings)
    current = state.rollout or (state.ended[-1].rollout if state.ended else None)
    if current is None:
        console.print("no rollout has run yet (`mnistream canary VERSION` or `shadow VERSION`)")
        return
    if state.rollout is None:
        console.print("no rollout is running; the last one:")
    async with HistoryClient.at(settings.history_url) as history:
        try:
            found = await history.rollout(current.rollout_id)
        except (HistoryUnavailableError, HistoryRefusedError) as exc:
            console.print(describe(current))
            raise fail(f"the verdict is not available: {exc}") from exc
    if found is None or (state.rollout is None and found.state == "running"):
        console.print(describe(current))
        console.print("[yellow]history-service has not stored its latest step yet; try again[/]")
        if found is None:
            return
    print_rollout(found)


@rollout_app.command("watch")
def watch(
    complete: Annotated[
        bool,
        typer.Option(
            help="Promote the candidate (with the gate) once it is significantly not worse."
        ),
    ] = False,
    min_labels: Annotated[
        int, typer.Option(min=1, help="Labeled drawings per version before completing.")
    ] = 100,
    margin: Annotated[
        float,
        typer.Option(
            min=0, max=1, help="How much worse on labels still counts as not worse (0.01: 1 point)."
        ),
    ] = 0.01,
    interval: Annotated[float, typer.Option(min=0.5, help="Seconds between looks.")] = 5.0,
    timeout: Annotated[float, typer.Option(min=1, help="Give up after this many seconds.")] = 3600,
) -> None:
    """Follow the running rollout's verdict until it ends; with --complete, promote its
    candidate once the lower end of the 95 % interval of its advantage on labels is above
    -MARGIN, over at least MIN_LABELS labeled drawings per version. The guardrails in
    history-service still abort a bad one on their own."""
    settings = Settings()
    rule = Completion(min_labels, margin) if complete else None
    asyncio.run(watch_running(settings, Promoter(settings), rule, interval, timeout))


@dataclass(frozen=True)
class Completion:
    """When `rollout watch --complete` promotes the candidate."""

    min_labels: int
    margin: float

    def met(self, rollout: RolloutOut) -> bool:
        """Enough labels on both sides, and significantly not worse than the champion."""
        labeled = min(v.labeled for v in rollout.versions)
        low = rollout.difference_low
        return labeled >= self.min_labels and low is not None and low > -self.margin


async def watch_running(
    settings: Settings,
    promoter: Promoter,
    rule: Completion | None,
    interval: float,
    wait_s: float,
) -> None:
    running = (await ledger_state(settings)).rollout
    if running is None:
        raise fail("no rollout is running")
    console.print(describe(running))
    deadline = time.monotonic() + wait_s
    shown = ""
    async with HistoryClient.at(settings.history_url) as history:
        while time.monotonic() < deadline:
            try:
                found = await history.rollout(running.rollout_id)
            except (HistoryUnavailableError, HistoryRefusedError) as exc:
                console.print(f"[yellow]the verdict is not available: {exc}[/]")
                found = None
            if found is not None:
                line = _progress(found)
                if line != shown:
                    console.print(line)
                    shown = line
                if found.state != "running":
                    ending = f"the rollout is {found.state}" + _ending(found)
                    if rule is not None and found.state != "completed":
                        raise fail(ending)  # --complete asked for a completion
                    console.print(ending)
                    return
                if rule is not None and rule.met(found):
                    console.print("the candidate is significantly not worse: completing it")
                    reason = f"rollout watch: {found.verdict}"
                    await complete_rollout(
                        promoter, found.rollout_id, found.candidate_version, reason
                    )
                    return
            await asyncio.sleep(interval)
    raise fail(f"the rollout was still running after {wait_s:.0f} s")


def _progress(rollout: RolloutOut) -> str:
    counts = ", ".join(
        f"v{v.version} read {v.readings} (labels {v.labeled})" for v in rollout.versions
    )
    return f"{counts}; {rollout.verdict}"


def _ending(rollout: RolloutOut) -> str:
    return f" ({rollout.ended_by}: {rollout.end_reason})" if rollout.end_reason else ""


def _failed(v: VersionFigures) -> str:
    """How many drawings a version failed on, with the share of those it was given."""
    if not v.failed or v.failure_rate is None:
        return "0"
    return f"{v.failed} ({v.failure_rate:.1%})"


def print_rollout(rollout: RolloutOut) -> None:
    """A rollout's course, its figures per version and its verdict."""
    share = "shadow" if rollout.mode == "shadow" else f"{rollout.percent:g} %"
    console.print(
        f"{rollout.mode} {rollout.rollout_id}: v{rollout.candidate_version} beside champion "
        f"v{rollout.champion_version} ({share}), {rollout.state}; started "
        f"{rollout.started_at:%Y-%m-%d %H:%M:%S} by {rollout.started_by}"
        + (f" ({rollout.reason})" if rollout.reason else "")
    )
    if rollout.ended_at is not None:
        console.print(
            f"ended {rollout.ended_at:%Y-%m-%d %H:%M:%S} by {rollout.ended_by}"
            + (f": {rollout.end_reason}" if rollout.end_reason else "")
        )
    table = Table()
    columns = ("version", "role", "read", "answered", "failed", "labeled", "accuracy (95 %)")
    for column in (*columns, "p50 ms", "p99 ms"):
        table.add_column(column)
    for v in rollout.versions:
        accuracy = "-"
        if v.accuracy is not None and v.accuracy_low is not None and v.accuracy_high is not None:
            accuracy = f"{v.accuracy:.1%} [{v.accuracy_low:.1%}, {v.accuracy_high:.1%}]"
        table.add_row(
            f"v{v.version}",
            v.role,
            str(v.readings),
            str(v.answered),
            _failed(v),
            str(v.labeled),
            accuracy,
            "-" if v.latency_p50_ms is None else f"{v.latency_p50_ms:.1f}",
            "-" if v.latency_p99_ms is None else f"{v.latency_p99_ms:.1f}",
        )
    console.print(table)
    if rollout.compared:
        agreement = "-" if rollout.agreement is None else f"{rollout.agreement:.1%}"
        console.print(f"agreement on the {rollout.compared} drawings both read: {agreement}")
    console.print(f"verdict: {rollout.verdict}")
