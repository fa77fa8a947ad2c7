"""`models`, `promote`, `rollback`, `evaluate`, `status`, `erase`: the operator commands."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from mnistream_common import tracing
from mnistream_common.events import ModelPromoted
from mnistream_common.groups import group_lag, group_status
from mnistream_common.history_api import EraseIn, RescoreJobOut, VersionStats
from mnistream_common.history_client import (
    HistoryClient,
    HistoryRefusedError,
    HistoryUnavailableError,
)
from mnistream_common.kafka import read_ledger_entries
from mnistream_common.ledger import Rollout, fold
from mnistream_common.rescore import JobSpec
from mnistream_common.settings import KafkaSettings
from mnistream_common.topics import Groups
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mnistream_cli.kafka_ops import publish_job
from mnistream_cli.promotion import GateReport, Promoter, PromotionError, promoted_by
from mnistream_cli.registry import RegistryError
from mnistream_cli.replay import replay_dead_letters
from mnistream_cli.settings import Settings

FLIPS_PRINTED = 20  # flips the flip report lists
console = Console()


def fail(message: str) -> typer.Exit:
    """Print an error a person can act on; exit 1."""
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(1)


def models() -> None:
    """List registered versions: architecture, test accuracy, sha256, created, champion."""
    asyncio.run(_models(Promoter(Settings())))


async def _models(promoter: Promoter) -> None:
    try:
        versions = promoter.registry.versions()
        ledger = await promoter.ledger()
    except RegistryError as exc:
        raise fail(str(exc)) from exc
    champion = ledger[-1].model.version if ledger else None
    table = Table(title=f"registered model {promoter.registry.name}")
    for column in ("version", "architecture", "test acc", "sha256", "created (UTC)", "champion"):
        table.add_column(column)
    for v in versions:
        table.add_row(
            str(v.version),
            v.architecture,
            f"{v.test_accuracy:.4f}" if v.test_accuracy is not None else "-",
            v.sha256[:12] or "-",
            v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            "★ champion" if v.version == champion else "",
        )
    console.print(table if versions else "no versions registered yet: run `mnistream train`")


def promote(
    version: Annotated[
        int | None,
        typer.Argument(help="Registered version to promote (default: the rollout's candidate)."),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for the ledger.")] = "",
    force: Annotated[
        bool,
        typer.Option(
            help="Promote even if the quality gate objects, or another version's rollout runs."
        ),
    ] = False,
) -> None:
    """Make VERSION the champion: quality gate, MLflow alias, `model.promoted` (acks=all).
    During a rollout, promoting its candidate (VERSION left out) completes it."""
    settings = Settings()
    traced(settings, "promote", _promote(Promoter(settings), version, reason, force))


def traced(settings: Settings, command: str, work: Coroutine[Any, Any, None]) -> None:
    """Run a command that publishes to the ledger in a trace of its own (when tracing is on:
    the workers' swaps and the rescore continue it), and say which."""
    with tracing.command_span("mnistream-cli", settings, f"mnistream {command}") as span:
        asyncio.run(work)
    if (trace_id := tracing.trace_id(span)) is not None:
        console.print(f"trace: {trace_id}")


async def _promote(
    promoter: Promoter,
    version: int | None,
    reason: str,
    force: bool,
    completing: uuid.UUID | None = None,
) -> None:
    rollout = await _running_rollout(promoter)
    if completing is not None and (rollout is None or rollout.rollout_id != completing):
        raise fail(f"rollout {completing} is no longer running; nothing was promoted")
    version = _version_to_promote(rollout, version, force, "promote")
    try:
        report = await promoter.check(version)
        show_gate(report)
        if report.objections and not force:
            raise fail(
                "refused: " + "; ".join(report.objections) + ". Use --force to promote anyway."
            )
        completes = rollout is not None and rollout.started.candidate.version == version
        if completes and rollout is not None:
            completes = await _still_running(promoter, rollout, force)
        previous = report.serving
        event = await promoter.promote(report.candidate, previous=previous, reason=reason)
    except (RegistryError, PromotionError) as exc:
        raise fail(str(exc)) from exc
    ended = ""
    if rollout is not None:
        ended = " and completes its rollout" if completes else " and ends the rollout unfinished"
    console.print(
        f"[bold green]promoted[/] {event.model.name} v{event.model.version} "
        f"(previous: {f'v{previous}' if previous else 'none'}){ended}; workers swap now, "
        "rescoring of the history starts"
    )
    show_reference(event)


def show_reference(event: ModelPromoted) -> None:
    """Say what live drawings are compared with while the new champion serves."""
    if event.drift_reference is None:
        console.print(
            f"[yellow]v{event.model.version} has no drift reference (trained before references "
            "were logged, or unreadable): `mnistream drift` has nothing to compare with[/]"
        )
        return
    console.print(f"drift reference: {event.drift_reference.source}")


async def complete_rollout(
    promoter: Promoter, rollout_id: uuid.UUID, version: int, reason: str
) -> None:
    """Promote the running rollout's candidate, as `mnistream promote` does (gate included),
    if that rollout still runs."""
    await _promote(promoter, version, reason, force=False, completing=rollout_id)


async def _running_rollout(promoter: Promoter) -> Rollout | None:
    try:
        return fold(await read_ledger_entries(promoter.settings)).rollout
    except Exception as exc:  # Kafka down: say so plainly
        raise fail(f"Kafka is unreachable ({exc}); nothing was promoted") from exc


def _version_to_promote(
    rollout: Rollout | None, version: int | None, force: bool, command: str
) -> int:
    """The version asked for, or the running rollout's candidate; another version while a
    rollout runs (it would end the rollout unfinished) only with --force."""
    if rollout is None:
        if version is None:
            raise fail("which version? No rollout is running whose candidate to promote")
        return version
    candidate = rollout.started.candidate.version
    if version is None:
        return candidate
    if version != candidate and not force:
        raise fail(
            f"a {rollout.started.mode} of v{candidate} is running: promote v{candidate} to "
            f"complete it, `mnistream abort` it first, or {command} with --force (it ends "
            "unfinished)"
        )
    return version


async def _still_running(promoter: Promoter, rollout: Rollout, force: bool) -> bool:
    """Whether the rollout being completed still runs (a guardrail may have aborted it while
    the gate ran); if it ended, the promotion goes on only with --force."""
    state = fold(await read_ledger_entries(promoter.settings))
    if state.rollout is not None and state.rollout.rollout_id == rollout.rollout_id:
        return True
    ended = [e for e in state.ended if e.rollout.rollout_id == rollout.rollout_id]
    why = f"{ended[-1].outcome} by {ended[-1].by}: {ended[-1].reason}" if ended else "it ended"
    if force:
        console.print(f"[yellow]the rollout ended meanwhile ({why}); promoting anyway[/]")
        return False
    raise fail(
        f"the {rollout.started.mode} of v{rollout.started.candidate.version} ended while the "
        f"gate ran ({why}); nothing was promoted. Use --force to promote it anyway."
    )


def show_gate(report: GateReport) -> None:
    c, ch = report.candidate, report.champion
    console.print(
        f"candidate v{c.version} ({c.architecture}) test accuracy "
        f"{c.test_accuracy if c.test_accuracy is not None else '-'}"
    )
    if ch is not None:
        console.print(
            f"champion  v{ch.version} ({ch.architecture}) test accuracy {ch.test_accuracy}"
        )
    elif report.serving is not None:
        console.print(
            f"[yellow]the ledger's champion v{report.serving} is not in the registry[/] (a "
            "forged promotion, or a version deleted since): nothing to compare with; workers "
            "serve the newest earlier champion that loads until this promotion"
        )
    if report.labeled:
        console.print(
            f"user labels ({report.labeled}): candidate {report.candidate_label_accuracy:.4f}, "
            f"champion {report.champion_label_accuracy:.4f}"
        )
    _print_flips(report)


def _print_flips(report: GateReport) -> None:
    """The gate's negative flips on labeled drawings, and why they were not judged if not."""
    if report.negative_flips is not None:
        console.print(
            f"labeled drawings the champion reads right and the candidate misreads: "
            f"{report.negative_flips} of {report.champion_right}; the other way round: "
            f"{report.positive_flips}"
        )
    for note in report.notes:
        console.print(f"[yellow]{note}[/]")


def rollback(
    reason: Annotated[str, typer.Option(help="Why, for the ledger.")] = "rollback",
    force: Annotated[bool, typer.Option(help="Roll back even while a rollout runs.")] = False,
) -> None:
    """Re-promote the champion before the current one (from the ledger)."""
    settings = Settings()
    traced(settings, "rollback", _rollback(Promoter(settings), reason, force))


async def _rollback(promoter: Promoter, reason: str, force: bool) -> None:
    rollout = await _running_rollout(promoter)
    if rollout is not None and not force:
        raise fail(
            f"a {rollout.started.mode} of v{rollout.started.candidate.version} is running: "
            "`mnistream abort` it first, or roll back with --force (it ends unfinished)"
        )
    try:
        ledger = await promoter.ledger()
        if not ledger or ledger[-1].previous_version is None:
            raise fail("nothing to roll back to: the ledger has no previous champion")
        current, target = ledger[-1].model.version, ledger[-1].previous_version
        candidate = promoter.registry.get(target)
        event = await promoter.promote(candidate, previous=current, reason=reason)
    except (RegistryError, PromotionError) as exc:
        raise fail(str(exc)) from exc
    console.print(f"[bold green]rolled back[/] from v{current} to v{event.model.version}")
    show_reference(event)


def evaluate(
    version: Annotated[int, typer.Argument(help="Registered version to evaluate.")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the rescore.")] = 600.0,
) -> None:
    """Read every stored drawing with VERSION without promoting it, then print the flip report
    and what the promotion gate would say (negative flips on labeled drawings included)."""
    settings = Settings()
    asyncio.run(_evaluate(settings, Promoter(settings), version, timeout))


async def _evaluate(settings: Settings, promoter: Promoter, version: int, wait_s: float) -> None:
    await evaluate_version(settings, promoter, version, wait_s, uuid.uuid4())


async def evaluate_version(
    settings: Settings, promoter: Promoter, version: int, wait_s: float, job_id: uuid.UUID
) -> None:
    """Read every stored drawing with VERSION as job `job_id` (followed, not published again,
    when that job exists already), then print the flip report and the gate's verdict."""
    try:
        candidate = promoter.registry.get(version)
        ledger = await promoter.ledger()
    except RegistryError as exc:
        raise fail(str(exc)) from exc
    if missing := candidate.missing_tags():
        raise fail(f"version {version} lacks the tags {', '.join(missing)}")
    job = JobSpec(job_id, "candidate", candidate.ref, candidate.onnx_uri)
    async with HistoryClient.at(settings.history_url) as history:
        try:
            found = await history.job(job_id)
            total = found.total if found is not None else await publish_job(settings, history, job)
        except (HistoryUnavailableError, HistoryRefusedError) as exc:
            raise fail(str(exc)) from exc
        if not total:
            raise fail("no stored drawings to evaluate on yet: draw some first")
        again = " (published before: following it)" if found is not None else ""
        console.print(f"evaluating v{version} on {total} drawings (job {job.job_id}){again}")
        report_job = await _follow_job(history, job.job_id, total, wait_s)
        against = ledger[-1].model.version if ledger else None
        report = await history.version_stats(version, against, flips=FLIPS_PRINTED)
    _print_flip_report(report)
    _print_skipped(report_job)
    await _print_verdict(promoter, version)


async def _print_verdict(promoter: Promoter, version: int) -> None:
    """The promotion gate's verdict on the candidate, without promoting it."""
    try:
        verdict = await promoter.check(version)
    except (RegistryError, PromotionError) as exc:
        console.print(f"[yellow]the promotion gate could not judge it: {exc}[/]")
        return
    show_gate(verdict)
    if verdict.objections:
        console.print("`mnistream promote` would refuse it: " + "; ".join(verdict.objections))
    else:
        console.print("`mnistream promote` would accept it")


async def _follow_job(
    history: HistoryClient, job_id: uuid.UUID, total: int, wait_s: float
) -> RescoreJobOut:
    deadline = time.monotonic() + wait_s
    columns = (TextColumn("rescoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("job", total=total)
        while time.monotonic() < deadline:
            job = await history.job(job_id)
            if job is not None:
                progress.update(bar, completed=job.done)
                if job.finished:
                    return job
            await asyncio.sleep(0.5)
    raise fail(f"the evaluation did not finish within {wait_s:.0f} s; are rescore workers running?")


def _print_skipped(job: RescoreJobOut) -> None:
    if not job.skipped:
        return
    console.print(
        f"[yellow]{job.skipped} of {job.total} drawings could not be read and were skipped[/] "
        "(not in the comparison above):"
    )
    for item in job.skipped_drawings:
        console.print(f"  {item.digit_id}: {item.reason}")
    if job.skipped > len(job.skipped_drawings):
        console.print(f"  ... and {job.skipped - len(job.skipped_drawings)} more")


def _print_flip_report(report: VersionStats) -> None:
    console.print(_flip_summary(report))
    if report.flips:
        table = Table(title="flips (old → new, label)")
        for column in ("digit id", "old", "new", "label"):
            table.add_column(column)
        for flip in report.flips[:FLIPS_PRINTED]:
            label = "-" if flip.label is None else str(flip.label)
            table.add_row(str(flip.digit_id), str(flip.from_), str(flip.to), label)
        console.print(table)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _flip_summary(report: VersionStats) -> str:
    agreement = report.agreement_with_previous
    shown = "-" if agreement is None else f"{agreement:.1%}"
    lines = [
        f"v{report.version} vs v{report.previous_version}: {report.compared} compared, "
        f"{report.flipped} flipped, agreement {shown}",
    ]
    if report.labeled:
        before = _percent(report.previous_label_accuracy)
        after = _percent(report.label_accuracy)
        lines.append(f"accuracy on {report.labeled} user labels: {before} → {after}")
    for digit, sources in sorted(report.flips_by_digit.items()):
        lines.append(
            f"  now {digit}: "
            + ", ".join(f"{k.removeprefix('from_')}→{digit} ×{n}" for k, n in sources.items())
        )
    return "\n".join(lines)


def status() -> None:
    """Champion, live workers, consumer lag per group, rescore progress."""
    asyncio.run(_status(Settings()))


async def _status(settings: Settings) -> None:
    try:
        # Read at once: each is a few round trips to the broker.
        entries, groups = await asyncio.gather(
            read_ledger_entries(settings),
            group_status(
                settings,
                [Groups.INFERENCE, Groups.HISTORY, Groups.RESCORE, Groups.RESCORE_PLANNER],
            ),
        )
    except Exception as exc:  # Kafka down: say so plainly
        raise fail(f"Kafka at {settings.kafka_bootstrap_servers} is unreachable ({exc})") from exc
    state = fold(entries)
    last = state.champion
    if last is not None:
        console.print(
            f"champion: {last.model.name} v{last.model.version} ({last.architecture}), promoted "
            f"{last.promoted_at:%Y-%m-%d %H:%M:%S} by {last.promoted_by}"
        )
    else:
        console.print("champion: none promoted yet (`mnistream promote VERSION`)")
    if state.rollout is not None:
        start = state.rollout.started
        share = "shadow" if state.rollout.shadow else f"{state.rollout.percent:g} % of drawings"
        console.print(
            f"rollout: {start.mode} of v{start.candidate.version} ({share}), started "
            f"{start.occurred_at:%Y-%m-%d %H:%M:%S} by {start.requested_by}; "
            "`mnistream rollout status` for its verdict"
        )
    table = Table(title="consumer groups")
    for column in ("group", "state", "members", "lag"):
        table.add_column(column)
    for g in groups:
        lag = ", ".join(f"{t} {n}" for t, n in sorted(g.lag.items())) or "-"
        table.add_row(g.group, g.state, "\n".join(g.members) or "-", lag)
    console.print(table)
    await _print_jobs(settings.history_url)


async def _print_jobs(history_url: str) -> None:
    try:
        async with HistoryClient.at(history_url, timeout=10) as history:
            jobs = await history.jobs()
    except (HistoryUnavailableError, HistoryRefusedError) as exc:
        console.print(f"rescore progress: {exc}")
        return
    for job in jobs[:5]:
        state = "done" if job.finished else "superseded" if job.superseded else "running"
        console.print(
            f"{job.kind} job {job.job_id} v{job.model_version}: {job.done}/{job.total} {state}"
        )


def erase(
    digit_ids: Annotated[list[uuid.UUID], typer.Argument(help="The drawings' ids.")],
    reason: Annotated[
        str, typer.Option(help="Why: a request's reference, kept in the erasure ledger.")
    ] = "",
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm: an erased drawing cannot be brought back.")
    ] = False,
) -> None:
    """Erase drawings for good (needs ADMIN_TOKEN): their rows, images and predictions go, their
    records in digits.submitted are compacted away within a day, and no replay restores them."""
    if not yes:
        raise fail("an erased drawing cannot be brought back; run again with --yes to confirm")
    settings = Settings()
    token = settings.admin_token.get_secret_value()
    if not token:
        raise fail("an erasure needs the admin token: set ADMIN_TOKEN (history-service's) first")
    asyncio.run(_erase(settings, token, digit_ids, reason[:2000]))


async def _erase(settings: Settings, token: str, digit_ids: list[uuid.UUID], reason: str) -> None:
    failed = 0
    async with HistoryClient.at(settings.history_url, timeout=60) as history:
        for digit_id in digit_ids:
            request = EraseIn(digit_id=digit_id, requested_by=promoted_by(), reason=reason)
            try:
                erased = await history.erase(token, request)
            except HistoryUnavailableError as exc:
                raise fail(
                    f"{exc} (history-service applies erasures: is it running, and Kafka up?)"
                ) from exc
            except HistoryRefusedError as exc:
                console.print(
                    f"[bold red]{digit_id}[/] not erased ({exc.status_code}): {exc.detail}"
                )
                failed += 1
                continue
            state = (
                "was already erased"
                if erased.already_erased
                else "erased"
                if erased.applied
                else "erasure recorded; history-service applies it shortly"
            )
            console.print(f"{digit_id} {state} ({erased.erased_at:%Y-%m-%d %H:%M:%S} UTC)")
    if failed:
        raise typer.Exit(1)


replay_app = typer.Typer(help="Rebuild the history from the topics; re-publish dead letters.")


@replay_app.command("history")
def replay_history(
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Re-read every topic from offset 0.")
    ] = False,
    since: Annotated[
        datetime | None, typer.Option(help="Re-read records from this time (ISO 8601, UTC).")
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="Wait, showing progress, until history-service has caught up.")
    ] = False,
) -> None:
    """Have history-service rebuild its tables from Kafka (needs ADMIN_TOKEN).

    The running history-service stops its consumers, rewinds the `history` group to the
    beginning (or to --since) and consumes again; its writes are idempotent, so this rebuilds an
    emptied database (`history-service reset`) and changes nothing in a full one.
    """
    if from_beginning == (since is not None):
        raise fail("say where to start: --from-beginning or --since TIME (one of them)")
    settings = Settings()
    token = settings.admin_token.get_secret_value()
    if not token:
        raise fail("a replay needs the admin token: set ADMIN_TOKEN (history-service's) first")
    when = since.replace(tzinfo=since.tzinfo or UTC) if since else None
    asyncio.run(_replay_history(settings, token, when, wait))


async def _replay_history(
    settings: Settings, token: str, since: datetime | None, wait: bool
) -> None:
    try:
        async with HistoryClient.at(settings.history_url, timeout=60) as history:
            rewind = await history.replay(token, since)
    except HistoryUnavailableError as exc:
        raise fail(f"{exc}; it replays itself, so start it first (`make run`)") from exc
    except HistoryRefusedError as exc:
        raise fail(f"history-service refused the replay ({exc.status_code}): {exc.detail}") from exc
    for topic, count in sorted(rewind.records.items()):
        console.print(f"{topic:<18} {count} records to replay")
    console.print(f"history rewound: {rewind.total} records; history-service is re-reading them")
    if wait:
        await _follow_lag(settings, rewind.total)


async def _follow_lag(kafka: KafkaSettings, total: int) -> None:
    columns = (TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("replay", total=total)
        while (lag := await group_lag(kafka, Groups.HISTORY)) > 0:
            progress.update(bar, completed=max(0, total - lag))
            await asyncio.sleep(0.5)
        progress.update(bar, completed=total)


@replay_app.command("deadletter")
def replay_deadletter(
    topic: Annotated[
        str | None,
        typer.Option(
            help="Only dead letters that came from this topic (its replays keep their own "
            "position, so the other topics' letters stay for later)."
        ),
    ] = None,
) -> None:
    """Re-publish dead letters to their source topic (after a fix); each one once."""
    settings = Settings()
    columns = (TextColumn("dead letters"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("replay", total=None)

        def show(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        result = asyncio.run(replay_dead_letters(settings, topic=topic, progress=show))
    for source, count in sorted(result.republished.items()):
        console.print(f"re-published {count} to {source}")
    if not result.republished:
        console.print("no dead letters to replay")
    if result.skipped:
        console.print(f"skipped {result.skipped} (other topics, or unreadable)")
    for reason, count in sorted(result.refused.items()):
        console.print(f"refused {count}: {reason}")


def bootstrap() -> None:
    """First run: if no model was ever promoted, train the quick weak MLP and promote it."""
    asyncio.run(_bootstrap(Promoter(Settings())))


async def _bootstrap(promoter: Promoter) -> None:
    try:
        ledger = await promoter.ledger()
    except Exception as exc:  # Kafka down: nothing can run
        raise fail(f"cannot read the promotion ledger ({exc}); is the stack up?") from exc
    if ledger:
        last = ledger[-1]
        console.print(
            f"champion: v{last.model.version} ({last.architecture}); nothing to bootstrap"
        )
        return
    console.print(
        "no model has been promoted yet: training the first model (the teaching app's MLP, "
        "10 hidden units; about 92 % accuracy, on purpose)"
    )
    from mnistream_cli.train import run_training, training_config

    registered = run_training(training_config(arch="mlp", hidden=10), console)
    try:
        candidate = promoter.registry.get(registered.version)
        event = await promoter.promote(candidate, previous=None, reason="first model (bootstrap)")
    except (RegistryError, PromotionError) as exc:
        raise fail(str(exc)) from exc
    console.print(f"[bold green]promoted[/] v{event.model.version} as the first champion")
    show_reference(event)
