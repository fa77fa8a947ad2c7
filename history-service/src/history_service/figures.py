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

A write visits only the readings it changed and the pairs they are in: a drawing read by V
versions costs O(V) when one more version reads it. Agreement (`version_pairs`, at most 100 rows
per pair of versions) is kept for every pair of versions. Flips, a row per drawing two versions
read differently, are kept only for the comparisons the ledger makes: each promoted version
with the champion before it (migration 0006). Kept for every pair they grew with the square of
the versions (217,000 rows for 2,000 drawings read by 13 versions) and made every write slower
with each version; a flip report against any other version is read from the predictions
(`queries.flips_page`). A promotion that adds a comparison fills its flips from the rows stored
so far (`comparisons_kept_up`), so the flips stay a function of the rows, promotions included.

Writers of the figures take one transaction-level advisory lock, so two history-service
instances never interleave their before/after reads (history runs one writer per process, so
the lock is only contended when the group is scaled out).
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
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
_COMPARISONS = text(
    "SELECT DISTINCT version, previous_version FROM promotions WHERE previous_version IS NOT NULL"
)
_FILL_FLIPS = text(
    "INSERT INTO prediction_flips (model_version, other_version, digit_id, from_digit, to_digit) "
    "SELECT n.model_version, o.model_version, n.digit_id, o.predicted_digit, n.predicted_digit "
    "FROM predictions n JOIN predictions o "
    "ON o.digit_id = n.digit_id AND o.model_version = :other "
    "WHERE n.model_version = :version AND o.predicted_digit <> n.predicted_digit "
    "ON CONFLICT (model_version, other_version, digit_id) DO UPDATE SET "
    "from_digit = excluded.from_digit, to_digit = excluded.to_digit"
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


@dataclass(frozen=True)
class Drawing:
    """One drawing's rows as the figures see them: a reading per version, and its label."""

    readings: dict[int, Reading] = field(default_factory=dict)
    label: int | None = None


FlipKey = tuple[int, int, uuid.UUID]  # version, the version it is compared with, drawing
Comparisons = frozenset[tuple[int, int]]  # (version, previous_version) of every promotion


@dataclass
class Change:
    """What a write changed in the figures: amounts to add, and flips to put (or, None, drop)."""

    counts: Counter[tuple[int, str]] = field(default_factory=Counter)
    micros: Counter[tuple[int, str]] = field(default_factory=Counter)
    labeled: Counter[int] = field(default_factory=Counter)
    correct: Counter[int] = field(default_factory=Counter)
    # (version, other version, the other's digit, this version's digit) → drawings
    pairs: Counter[tuple[int, int, int, int]] = field(default_factory=Counter)
    flips: dict[FlipKey, tuple[int, int] | None] = field(default_factory=dict)

    def add(
        self, digit_id: uuid.UUID, before: Drawing, after: Drawing, compared: Comparisons
    ) -> None:
        """Count what changed in one drawing. Only the readings that changed, and the pairs they
        are in, are visited: a new version costs O(versions of the drawing), not their square."""
        changed = {
            v
            for v in before.readings.keys() | after.readings.keys()
            if before.readings.get(v) != after.readings.get(v)
        }
        relabeled = before.label != after.label
        self._tally(before, changed, relabeled, -1)
        self._tally(after, changed, relabeled, +1)
        was, now = (
            _flips(digit_id, before, changed, compared),
            _flips(digit_id, after, changed, compared),
        )
        for key in was.keys() | now.keys():
            if was.get(key) != now.get(key):
                self.flips[key] = now.get(key)

    def _tally(self, drawing: Drawing, changed: set[int], relabeled: bool, sign: int) -> None:
        for v, r in drawing.readings.items():
            if drawing.label is not None and (relabeled or v in changed):
                self.labeled[v] += sign
                self.correct[v] += sign * int(r.digit == drawing.label)
            if v not in changed:
                continue
            self.counts[v, r.kind] += sign
            self.micros[v, r.kind] += sign * r.micros
            for o, other in drawing.readings.items():
                if o != v:
                    # Each ordered pair with a changed version once: (v, o) here, and (o, v)
                    # here too unless o changed (then its own turn counts it).
                    self.pairs[v, o, other.digit, r.digit] += sign
                    if o not in changed:
                        self.pairs[o, v, r.digit, other.digit] += sign


def _flips(
    digit_id: uuid.UUID, drawing: Drawing, changed: set[int], compared: Comparisons
) -> dict[FlipKey, tuple[int, int]]:
    """The drawing's flips (from the compared version's digit, to the version's) between the
    compared versions, among the pairs with a changed version."""
    flips: dict[FlipKey, tuple[int, int]] = {}
    for v in changed & drawing.readings.keys():
        r = drawing.readings[v]
        for o, other in drawing.readings.items():
            if other.digit == r.digit:
                continue
            if (v, o) in compared:
                flips[v, o, digit_id] = (other.digit, r.digit)
            if (o, v) in compared:
                flips[o, v, digit_id] = (r.digit, other.digit)
    return flips


def micros(confidence: float) -> int:
    """A confidence in millionths, rounded down (as `recompute` does in SQL)."""
    return math.floor(confidence * MICROS)


def drawings(rows: Iterable[Any]) -> dict[uuid.UUID, Drawing]:
    """The drawings of the rows `_READ` returns (every prediction of some drawings)."""
    found: dict[uuid.UUID, Drawing] = {}
    for row in rows:
        drawing = found.setdefault(row.digit_id, Drawing(label=row.label))
        reading = Reading(row.model_version, row.predicted_digit, row.kind, micros(row.confidence))
        drawing.readings[row.model_version] = reading
    return found


def change(
    before: dict[uuid.UUID, Drawing], after: dict[uuid.UUID, Drawing], compared: Comparisons
) -> Change:
    """What the figures gain when the drawings go from `before` to `after`."""
    total = Change()
    for digit_id in before.keys() | after.keys():
        total.add(
            digit_id, before.get(digit_id, Drawing()), after.get(digit_id, Drawing()), compared
        )
    return total


async def _read(connection: Any, digit_ids: list[uuid.UUID]) -> dict[uuid.UUID, Drawing]:
    return drawings((await connection.execute(_READ, {"ids": digit_ids})).all())


async def _compared(connection: Any) -> Comparisons:
    return frozenset((v, p) for v, p in (await connection.execute(_COMPARISONS)).all())


def nonzero(amounts: Counter[Any]) -> dict[Any, int]:
    """The amounts that are not 0, in key order."""
    return {key: n for key, n in sorted(amounts.items()) if n}


def _difference(after: Counter[Any], before: Counter[Any]) -> dict[Any, int]:
    return nonzero(Counter({key: after[key] - before[key] for key in after.keys() | before.keys()}))


async def _apply(connection: Any, delta: Change) -> None:
    """Add `delta` to the tables, each in key order (rows are locked in one order)."""
    counts, spent = nonzero(delta.counts), nonzero(delta.micros)
    rows = [
        {
            "version": v,
            "kind": k,
            "predictions": counts.get((v, k), 0),
            "micros": spent.get((v, k), 0),
        }
        for v, k in sorted(counts.keys() | spent.keys())
    ]
    labeled, correct = nonzero(delta.labeled), nonzero(delta.correct)
    label_rows = [
        {"version": v, "labeled": labeled.get(v, 0), "correct": correct.get(v, 0)}
        for v in sorted(labeled.keys() | correct.keys())
    ]
    pair_rows = [
        {"version": v, "other": o, "other_digit": od, "digit": d, "drawings": n}
        for (v, o, od, d), n in nonzero(delta.pairs).items()
    ]
    flips = sorted(delta.flips.items(), key=lambda kf: str(kf[0]))
    for statement, params in (
        (_ADD_COUNTS, rows),
        (_DROP_EMPTY_COUNTS, [r for r in rows if r["predictions"] < 0]),
        (_ADD_LABELS, label_rows),
        (_DROP_EMPTY_LABELS, [r for r in label_rows if r["labeled"] < 0]),
        (_ADD_PAIRS, pair_rows),
        (_DROP_EMPTY_PAIRS, [r for r in pair_rows if r["drawings"] < 0]),
        (
            _DROP_FLIPS,
            [{"version": v, "other": o, "digit_id": d} for (v, o, d), f in flips if f is None],
        ),
        (
            _PUT_FLIPS,
            [
                {"version": v, "other": o, "digit_id": d, "from_digit": f[0], "to_digit": f[1]}
                for (v, o, d), f in flips
                if f is not None
            ],
        ),
    ):
        if params:
            await connection.execute(statement, params)


async def lock(connection: Any) -> None:
    """Take the figures' lock in `connection`'s transaction (held until it ends): the writers of
    drawings take it too, so an erasure never interleaves with a write of the drawing it erases."""
    await connection.execute(_LOCK)


@asynccontextmanager
async def kept_up(connection: Any, digit_ids: Iterable[uuid.UUID]) -> AsyncIterator[None]:
    """Around a write of these drawings' predictions or labels (in `connection`'s transaction):
    the figures change by exactly what the write changed."""
    ids = sorted(set(digit_ids))
    await lock(connection)
    compared = await _compared(connection)
    before = await _read(connection, ids)
    yield
    await _apply(connection, change(before, await _read(connection, ids), compared))


@asynccontextmanager
async def comparisons_kept_up(connection: Any) -> AsyncIterator[None]:
    """Around a write of promotions: a comparison the ledger did not have before (a version and
    the champion before it) gets the flips of the predictions stored so far, in one statement
    over the two versions' rows, under the lock: cheap for a version with few predictions, a
    join over every stored drawing for one that was evaluated (or a rollback), which holds up
    the other writes meanwhile (not measured at scale yet)."""
    await connection.execute(_LOCK)
    before = await _compared(connection)
    yield
    for version, other in sorted(await _compared(connection) - before):
        await connection.execute(_FILL_FLIPS, {"version": version, "other": other})


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
        "WHERE o.predicted_digit <> n.predicted_digit AND EXISTS (SELECT FROM promotions c "
        "WHERE c.version = n.model_version AND c.previous_version = o.model_version)",
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
