"""Per-version figures kept up to date as rows are written, so reading them costs the same at
ten million drawings as at ten thousand.

A version's counts, its agreement with another version, its flips and its accuracy on user
labels used to be aggregates over every prediction of the version, read on every poll of the
models panel (seconds at a million drawings). They are tables now (migration 0005), and every
write of predictions or labels adjusts them by the difference it made: the writer reads the rows
of the drawings a batch touches before and after its upsert and applies after − before. The
figures are therefore a function of the rows alone, whatever order the events arrived in, and a
replay, which rebuilds the same rows, rebuilds the same figures. `recompute` derives them from
the rows in one pass: migration 0005 fills the tables with it, and the tests compare it with
what was maintained.

Writers of the figures take one transaction-level advisory lock, so two history-service
instances never interleave their before/after reads (history runs one writer per process, so
the lock is only contended when the group is scaled out).
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID

# pg_advisory_xact_lock key of the figures: one writer of them at a time.
FIGURES_LOCK = 0x6D6E6973  # "mnis"
_LOCK = text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=FIGURES_LOCK)
# Confidence is summed in millionths: integers add up to the same total in any order.
MICROS = 1_000_000

_READ = text(
    "SELECT p.digit_id, p.model_version, p.predicted_digit, p.kind, p.confidence, l.label "
    "FROM predictions p LEFT JOIN labels l ON l.digit_id = p.digit_id "
    "WHERE p.digit_id = ANY(:ids)"
).bindparams(bindparam("ids", type_=ARRAY(UUID(as_uuid=True))))

_ADD_COUNTS = text(
    "INSERT INTO version_counts (model_version, kind, predictions, confidence_micros) "
    "VALUES (:version, :kind, :predictions, :micros) "
    "ON CONFLICT (model_version, kind) DO UPDATE SET "
    "predictions = version_counts.predictions + excluded.predictions, "
    "confidence_micros = version_counts.confidence_micros + excluded.confidence_micros"
)
_ADD_LABELS = text(
    "INSERT INTO version_labels (model_version, labeled, correct) "
    "VALUES (:version, :labeled, :correct) "
    "ON CONFLICT (model_version) DO UPDATE SET "
    "labeled = version_labels.labeled + excluded.labeled, "
    "correct = version_labels.correct + excluded.correct"
)
_ADD_PAIRS = text(
    "INSERT INTO version_pairs (model_version, other_version, other_digit, digit, drawings) "
    "VALUES (:version, :other, :other_digit, :digit, :drawings) "
    "ON CONFLICT (model_version, other_version, other_digit, digit) DO UPDATE SET "
    "drawings = version_pairs.drawings + excluded.drawings"
)
# A figure whose count went back to 0 is removed: the tables hold what a recomputation would.
_DROP_EMPTY_COUNTS = text(
    "DELETE FROM version_counts WHERE model_version = :version AND kind = :kind AND predictions = 0"
)
_DROP_EMPTY_LABELS = text(
    "DELETE FROM version_labels WHERE model_version = :version AND labeled = 0"
)
_DROP_EMPTY_PAIRS = text(
    "DELETE FROM version_pairs WHERE model_version = :version AND other_version = :other "
    "AND other_digit = :other_digit AND digit = :digit AND drawings = 0"
)
_DROP_FLIPS = text(
    "DELETE FROM prediction_flips "
    "WHERE model_version = :version AND other_version = :other AND digit_id = :digit_id"
)
_PUT_FLIPS = text(
    "INSERT INTO prediction_flips (model_version, other_version, digit_id, from_digit, to_digit) "
    "VALUES (:version, :other, :digit_id, :from_digit, :to_digit) "
    "ON CONFLICT (model_version, other_version, digit_id) DO UPDATE SET "
    "from_digit = excluded.from_digit, to_digit = excluded.to_digit"
)


@dataclass(frozen=True)
class Reading:
    """What one prediction row contributes: its version, digit, kind and confidence."""

    version: int
    digit: int
    kind: str
    micros: int


FlipKey = tuple[int, int, uuid.UUID]  # version, other version, drawing


@dataclass
class Contribution:
    """The figures a set of drawings' rows add up to (or, subtracted, what a write changed)."""

    counts: Counter[tuple[int, str]] = field(default_factory=Counter)
    micros: Counter[tuple[int, str]] = field(default_factory=Counter)
    labeled: Counter[int] = field(default_factory=Counter)
    correct: Counter[int] = field(default_factory=Counter)
    # (version, other version, the other's digit, this version's digit) → drawings
    pairs: Counter[tuple[int, int, int, int]] = field(default_factory=Counter)
    flips: dict[FlipKey, tuple[int, int]] = field(default_factory=dict)

    def add_drawing(
        self, digit_id: uuid.UUID, readings: Sequence[Reading], label: int | None
    ) -> None:
        """Count one drawing: its every prediction, and every pair of them."""
        for r in readings:
            self.counts[r.version, r.kind] += 1
            self.micros[r.version, r.kind] += r.micros
            if label is not None:
                self.labeled[r.version] += 1
                self.correct[r.version] += int(r.digit == label)
            for o in readings:
                if o.version == r.version:
                    continue
                self.pairs[r.version, o.version, o.digit, r.digit] += 1
                if o.digit != r.digit:
                    self.flips[r.version, o.version, digit_id] = (o.digit, r.digit)


def micros(confidence: float) -> int:
    """A confidence in millionths, rounded down (as `recompute` does in SQL)."""
    return math.floor(confidence * MICROS)


def contribution(rows: Iterable[Any]) -> Contribution:
    """The figures of the rows `_READ` returns (every prediction of some drawings)."""
    by_digit: dict[uuid.UUID, list[Reading]] = {}
    labels: dict[uuid.UUID, int | None] = {}
    for row in rows:
        reading = Reading(row.model_version, row.predicted_digit, row.kind, micros(row.confidence))
        by_digit.setdefault(row.digit_id, []).append(reading)
        labels[row.digit_id] = row.label
    total = Contribution()
    for digit_id, readings in by_digit.items():
        total.add_drawing(digit_id, readings, labels[digit_id])
    return total


def _difference(after: Counter[Any], before: Counter[Any]) -> dict[Any, int]:
    changed = {key: after[key] - before[key] for key in after.keys() | before.keys()}
    return {key: delta for key, delta in sorted(changed.items()) if delta}


async def _read(connection: Any, digit_ids: list[uuid.UUID]) -> Contribution:
    return contribution((await connection.execute(_READ, {"ids": digit_ids})).all())


async def _apply(connection: Any, before: Contribution, after: Contribution) -> None:
    """Add after − before to the tables, each in key order (rows are locked in one order)."""
    counts = _difference(after.counts, before.counts)
    spent = _difference(after.micros, before.micros)
    rows = [
        {
            "version": v,
            "kind": k,
            "predictions": counts.get((v, k), 0),
            "micros": spent.get((v, k), 0),
        }
        for v, k in sorted(counts.keys() | spent.keys())
    ]
    labeled = _difference(after.labeled, before.labeled)
    correct = _difference(after.correct, before.correct)
    label_rows = [
        {"version": v, "labeled": labeled.get(v, 0), "correct": correct.get(v, 0)}
        for v in sorted(labeled.keys() | correct.keys())
    ]
    pair_rows = [
        {"version": v, "other": o, "other_digit": od, "digit": d, "drawings": n}
        for (v, o, od, d), n in _difference(after.pairs, before.pairs).items()
    ]
    gone = sorted(before.flips.keys() - after.flips.keys(), key=str)
    new = sorted(
        ((k, f) for k, f in after.flips.items() if before.flips.get(k) != f),
        key=lambda kf: str(kf[0]),
    )
    for statement, params in (
        (_ADD_COUNTS, rows),
        (_DROP_EMPTY_COUNTS, [r for r in rows if r["predictions"] < 0]),
        (_ADD_LABELS, label_rows),
        (_DROP_EMPTY_LABELS, [r for r in label_rows if r["labeled"] < 0]),
        (_ADD_PAIRS, pair_rows),
        (_DROP_EMPTY_PAIRS, [r for r in pair_rows if r["drawings"] < 0]),
        (_DROP_FLIPS, [{"version": v, "other": o, "digit_id": d} for v, o, d in gone]),
        (
            _PUT_FLIPS,
            [
                {"version": v, "other": o, "digit_id": d, "from_digit": f, "to_digit": t}
                for (v, o, d), (f, t) in new
            ],
        ),
    ):
        if params:
            await connection.execute(statement, params)


@asynccontextmanager
async def kept_up(connection: Any, digit_ids: Iterable[uuid.UUID]) -> AsyncIterator[None]:
    """Around a write of these drawings' predictions or labels (in `connection`'s transaction):
    the figures change by exactly what the write changed."""
    ids = sorted(set(digit_ids))
    await connection.execute(_LOCK)
    before = await _read(connection, ids)
    yield
    await _apply(connection, before, await _read(connection, ids))


_READ_ITEMS = text(
    "SELECT job_id, digit_id, skipped FROM rescore_job_items "
    "WHERE job_id = ANY(:jobs) AND digit_id = ANY(:digits)"
).bindparams(
    bindparam("jobs", type_=ARRAY(UUID(as_uuid=True))),
    bindparam("digits", type_=ARRAY(UUID(as_uuid=True))),
)
_ADD_PROGRESS = text(
    "UPDATE rescore_jobs SET done = done + :done, skipped = skipped + :skipped "
    "WHERE job_id = :job_id"
)


async def _job_items(
    connection: Any, items: list[tuple[uuid.UUID, uuid.UUID]]
) -> tuple[Counter[uuid.UUID], Counter[uuid.UUID]]:
    wanted = set(items)
    params = {"jobs": sorted({j for j, _ in items}), "digits": sorted({d for _, d in items})}
    done: Counter[uuid.UUID] = Counter()
    skipped: Counter[uuid.UUID] = Counter()
    for row in (await connection.execute(_READ_ITEMS, params)).all():
        if (row.job_id, row.digit_id) in wanted:
            done[row.job_id] += 1
            skipped[row.job_id] += int(row.skipped is not None)
    return done, skipped


@asynccontextmanager
async def progress_kept_up(
    connection: Any, items: Iterable[tuple[uuid.UUID, uuid.UUID]]
) -> AsyncIterator[None]:
    """Around a write of job items (job, drawing): each job's done and skipped counts change by
    what the write changed (its row must exist already)."""
    pairs = sorted(set(items), key=str)
    await connection.execute(_LOCK)
    done_before, skipped_before = await _job_items(connection, pairs)
    yield
    done_after, skipped_after = await _job_items(connection, pairs)
    done, skipped = _difference(done_after, done_before), _difference(skipped_after, skipped_before)
    rows = [
        {"job_id": j, "done": done.get(j, 0), "skipped": skipped.get(j, 0)}
        for j in sorted(done.keys() | skipped.keys(), key=str)
    ]
    if rows:
        await connection.execute(_ADD_PROGRESS, rows)


# ------------------------------------------------------------------ recomputed from the rows

# Each figure table as one aggregate over the rows: what migration 0005 filled the tables with
# (it spells the same SQL out), and what the tests compare the maintained tables with.
RECOMPUTE: dict[str, tuple[tuple[str, ...], str]] = {
    "version_counts": (
        ("model_version", "kind", "predictions", "confidence_micros"),
        "SELECT model_version, kind, count(*), "
        "sum(floor(confidence * 1000000.0::float8))::bigint "
        "FROM predictions GROUP BY model_version, kind",
    ),
    "version_labels": (
        ("model_version", "labeled", "correct"),
        "SELECT p.model_version, count(*), count(*) FILTER (WHERE p.predicted_digit = l.label) "
        "FROM predictions p JOIN labels l ON l.digit_id = p.digit_id GROUP BY p.model_version",
    ),
    "version_pairs": (
        ("model_version", "other_version", "other_digit", "digit", "drawings"),
        "SELECT n.model_version, o.model_version, o.predicted_digit, n.predicted_digit, count(*) "
        "FROM predictions n JOIN predictions o "
        "ON o.digit_id = n.digit_id AND o.model_version <> n.model_version "
        "GROUP BY 1, 2, 3, 4",
    ),
    "prediction_flips": (
        ("model_version", "other_version", "digit_id", "from_digit", "to_digit"),
        "SELECT n.model_version, o.model_version, n.digit_id, o.predicted_digit, n.predicted_digit "
        "FROM predictions n JOIN predictions o "
        "ON o.digit_id = n.digit_id AND o.model_version <> n.model_version "
        "WHERE o.predicted_digit <> n.predicted_digit",
    ),
    "job_progress": (
        ("job_id", "done", "skipped"),
        "SELECT job_id, count(*) AS done, count(skipped) AS skipped "
        "FROM rescore_job_items GROUP BY job_id",
    ),
}


def maintained(table: str) -> str:
    """The maintained figures of `table`, as rows comparable with RECOMPUTE's."""
    columns, _ = RECOMPUTE[table]
    source = "rescore_jobs" if table == "job_progress" else table
    return f"SELECT {', '.join(columns)} FROM {source}"  # noqa: S608 (names are constants)
