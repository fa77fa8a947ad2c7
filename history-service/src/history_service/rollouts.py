"""Rollouts as the history sees them: their course, folded from the stored ledger, and their
verdict, counted from the readings made during each one and the user labels.

The course comes from the same fold every worker runs (`mnistream_common.ledger`), over the
promotions and rollout steps in ledger order, so the history and the workers agree on which
rollout ran when and how it ended.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from mnistream_common.events import LedgerEntry, ModelPromoted, ModelRef, ModelRollout
from mnistream_common.history_api import RolloutOut, VersionFigures
from mnistream_common.ledger import Ended, LedgerState, Rollout
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

Role = Literal["champion", "candidate"]
Z95 = 1.959964  # two-sided 95 %
Z99 = 2.575829  # two-sided 99 %, for the guardrails: they act on their own


@dataclass(frozen=True)
class Evidence:
    """When labels are enough to judge, and how sure a judgement must be."""

    min_labels: int = 30
    z: float = Z95


_LEDGER = text(
    """
    SELECT 'promotion' AS kind, ledger_offset, promoted_at AS at, event_id, NULL::jsonb AS body,
           model_name, version, previous_version, sha256, onnx_uri, architecture, metrics,
           promoted_by, reason, promoted_at
      FROM promotions
    UNION ALL
    SELECT 'rollout', ledger_offset, (body->>'occurred_at')::timestamptz, event_id, body,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
      FROM rollout_steps
    ORDER BY ledger_offset NULLS FIRST, at, event_id
    """
)

_FIGURES = text(
    """
    SELECT r.model_version, count(*) AS readings,
           count(*) FILTER (WHERE r.kind = 'live') AS answered,
           count(l.label) AS labeled,
           count(*) FILTER (WHERE l.label = r.predicted_digit) AS correct,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY r.latency_ms) AS p50,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY r.latency_ms) AS p99
      FROM rollout_readings r LEFT JOIN labels l ON l.digit_id = r.digit_id
     WHERE r.rollout_id = :rollout_id
     GROUP BY r.model_version
    """
)

_FAILURES = text(
    """
    SELECT model_version, count(*) AS failed
      FROM rollout_failures
     WHERE rollout_id = :rollout_id
     GROUP BY model_version
    """
)

_AGREEMENT = text(
    """
    SELECT count(*) AS compared,
           count(*) FILTER (WHERE a.predicted_digit = b.predicted_digit) AS agreed
      FROM rollout_readings a
      JOIN rollout_readings b ON b.rollout_id = a.rollout_id AND b.digit_id = a.digit_id
     WHERE a.rollout_id = :rollout_id AND a.model_version = :champion
       AND b.model_version = :candidate
    """
)


def _entry(row: Any) -> LedgerEntry:
    if row.kind == "rollout":
        return ModelRollout.from_bytes(json.dumps(row.body).encode())  # as published
    return ModelPromoted(
        event_id=row.event_id,
        occurred_at=row.promoted_at,
        model=ModelRef(name=row.model_name, version=row.version, sha256=row.sha256),
        previous_version=row.previous_version,
        onnx_uri=row.onnx_uri,
        architecture=row.architecture,
        metrics=row.metrics,
        promoted_by=row.promoted_by,
        reason=row.reason,
        promoted_at=row.promoted_at,
    )


async def ledger_state(conn: AsyncConnection) -> LedgerState:
    """The ledger's state after every stored promotion and rollout step."""
    state = LedgerState()
    for position, row in enumerate((await conn.execute(_LEDGER)).all()):
        state.apply(_entry(row), row.ledger_offset if row.ledger_offset is not None else position)
    return state


def _courses(state: LedgerState) -> list[tuple[Rollout, Ended | None]]:
    """Every rollout of the ledger, newest first, with how it ended (None: running)."""
    courses: list[tuple[Rollout, Ended | None]] = [(e.rollout, e) for e in state.ended]
    if state.rollout is not None:
        courses.append((state.rollout, None))
    return sorted(courses, key=lambda course: course[0].started_offset, reverse=True)


async def rollouts(
    conn: AsyncConnection, evidence: Evidence | None = None, limit: int = 10
) -> list[RolloutOut]:
    """The newest `limit` rollouts, newest first, each with its figures and verdict (counted
    for those only: the ledger's fold is cheap, the figures are not)."""
    courses = _courses(await ledger_state(conn))[:limit]
    return [await _rollout_out(conn, r, ended, evidence or Evidence()) for r, ended in courses]


async def rollout(
    conn: AsyncConnection, rollout_id: uuid.UUID, evidence: Evidence | None = None
) -> RolloutOut | None:
    """One rollout, or None if the ledger has none of that id."""
    for running, ended in _courses(await ledger_state(conn)):
        if running.rollout_id == rollout_id:
            return await _rollout_out(conn, running, ended, evidence or Evidence())
    return None


async def judged_rollout(
    conn: AsyncConnection, running: Rollout, evidence: Evidence, ended: Ended | None = None
) -> RolloutOut:
    """A rollout's figures, counted now, and the verdict on them."""
    return await _rollout_out(conn, running, ended, evidence)


async def _rollout_out(
    conn: AsyncConnection, running: Rollout, ended: Ended | None, evidence: Evidence
) -> RolloutOut:
    start = running.started
    params = {"rollout_id": running.rollout_id}
    found = {row.model_version: row for row in (await conn.execute(_FIGURES, params)).all()}
    failed = {
        row.model_version: row.failed for row in (await conn.execute(_FAILURES, params)).all()
    }
    roles: tuple[tuple[int, Role], ...] = (
        (start.champion_version, "champion"),
        (start.candidate.version, "candidate"),
    )
    versions = [
        with_failures(_figures(found.get(v), v, role, evidence.z), failed.get(v, 0), evidence.z)
        for v, role in roles
    ]
    agreement = (
        await conn.execute(
            _AGREEMENT,
            {**params, "champion": start.champion_version, "candidate": start.candidate.version},
        )
    ).one()
    champion, candidate = versions
    out = RolloutOut(
        rollout_id=running.rollout_id,
        mode=start.mode,
        candidate_version=start.candidate.version,
        champion_version=start.champion_version,
        percent=running.percent,
        started_at=start.occurred_at,
        started_by=start.requested_by,
        reason=start.reason,
        state="running" if ended is None else ended.outcome,
        ended_at=None if ended is None else ended.at,
        ended_by=None if ended is None else ended.by,
        end_reason=None if ended is None else ended.reason,
        versions=versions,
        compared=agreement.compared,
        agreement=agreement.agreed / agreement.compared if agreement.compared else None,
        verdict="",
    )
    return out.model_copy(update=judge(champion, candidate, evidence))


def _figures(row: Any, version: int, role: Role, z: float) -> VersionFigures:
    if row is None:
        return VersionFigures(version=version, role=role)
    bounds = wilson(row.correct, row.labeled, z)
    return VersionFigures(
        version=version,
        role=role,
        readings=row.readings,
        answered=row.answered,
        labeled=row.labeled,
        correct=row.correct,
        accuracy=row.correct / row.labeled if row.labeled else None,
        accuracy_low=bounds[0] if bounds else None,
        accuracy_high=bounds[1] if bounds else None,
        latency_p50_ms=row.p50,
        latency_p99_ms=row.p99,
    )


def with_failures(figures: VersionFigures, failed: int, z: float) -> VersionFigures:
    """`figures` with the drawings the version failed on, and their share (with its Wilson
    interval) of those it was given: what it read and what it failed on."""
    given = figures.readings + failed
    bounds = wilson(failed, given, z)
    return figures.model_copy(
        update={
            "failed": failed,
            "failure_rate": failed / given if given else None,
            "failure_low": bounds[0] if bounds else None,
            "failure_high": bounds[1] if bounds else None,
        }
    )


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (it stays inside [0, 1] and keeps a width at 0
    or n successes, where the normal approximation has none), or None without trials."""
    if trials == 0:
        return None
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return centre - half, centre + half


def difference_interval(
    champion: VersionFigures, candidate: VersionFigures, z: float
) -> tuple[float, float, float] | None:
    """The candidate's accuracy minus the champion's, with Newcombe's interval (hybrid score,
    from each side's Wilson interval), or None without labels on both sides."""
    one = wilson(candidate.correct, candidate.labeled, z)
    zero = wilson(champion.correct, champion.labeled, z)
    if one is None or zero is None:
        return None
    a1, a0 = candidate.correct / candidate.labeled, champion.correct / champion.labeled
    (low1, high1), (low0, high0) = one, zero
    d = a1 - a0
    low = d - math.sqrt((a1 - low1) ** 2 + (high0 - a0) ** 2)
    high = d + math.sqrt((high1 - a1) ** 2 + (a0 - low0) ** 2)
    return d, low, high


def judge(
    champion: VersionFigures, candidate: VersionFigures, evidence: Evidence
) -> dict[str, Any]:
    """The verdict in plain words, and the interval behind it."""
    if min(candidate.labeled, champion.labeled) < evidence.min_labels:
        counts = f"candidate {candidate.labeled}, champion {champion.labeled}"
        return {
            "verdict": f"not enough labelled drawings yet ({counts}; "
            f"{evidence.min_labels} each are needed)",
            "judged": "undecided",
        }
    interval = difference_interval(champion, candidate, evidence.z)
    assert interval is not None
    d, low, high = interval
    figures = f"{_pct(candidate)} vs {_pct(champion)}"
    judged = "ahead" if low > 0 else "behind" if high < 0 else "level"
    words = {
        "ahead": "candidate ahead",
        "behind": "candidate behind",
        "level": "no significant difference yet",
    }[judged]
    return {
        "verdict": f"{words}: {figures}",
        "judged": judged,
        "difference": d,
        "difference_low": low,
        "difference_high": high,
    }


def _pct(f: VersionFigures) -> str:
    assert f.accuracy is not None
    assert f.accuracy_low is not None
    assert f.accuracy_high is not None
    half = (f.accuracy_high - f.accuracy_low) / 2
    return f"{f.accuracy * 100:.1f} % ± {half * 100:.1f}"
