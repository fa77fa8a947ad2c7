"""Idempotent writes of events into Postgres and MinIO.

Every write is an upsert keyed the way docs/design.md says (digit id; digit id and model version;
event id for the ledger) and resolves conflicts by a rule that does not depend on arrival
order, so processing a topic twice, or replaying it into an empty database, gives the same rows.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mnistream_common.events import (
    DeadLetter,
    DigitErased,
    DigitLabeled,
    DigitPredicted,
    DigitSubmitted,
    LedgerEntry,
    ModelPromoted,
    ModelRollout,
    RescoreSkipped,
)
from mnistream_common.storage import ObjectStore, drawing_key, sha256_hex
from sqlalchemy import bindparam, case, func, or_, text, tuple_, update
from sqlalchemy.dialects.postgresql import ARRAY, UUID, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from history_service import figures
from history_service.db import (
    Drawing,
    Erasure,
    Label,
    Prediction,
    Promotion,
    RescoreJob,
    RescoreJobItem,
    RolloutFailure,
    RolloutReading,
    RolloutStep,
)
from history_service.figures import comparisons_kept_up, kept_up, progress_kept_up

# When one drawing has several predictions by one version, the row keeps the most telling one:
# the live answer over a rescore, a rescore over a candidate evaluation, any of them over a
# shadow reading (the same model's reading of the same input, made beside another's answer).
KIND_RANK = {"live": 0, "rescore": 1, "candidate": 2, "shadow": 3}
_PREDICTION_KEY = ("digit_id", "model_version")


@dataclass(frozen=True)
class InputDrawing:
    """A submitted drawing and its model input (the event's own, or made from its image)."""

    event: DigitSubmitted
    model_input: bytes
    preprocessing_version: int


def _drawings_upsert() -> Any:
    # One statement for every batch (executemany): compiled once, cached by SQLAlchemy.
    table = Drawing.__table__
    statement = insert(Drawing)
    return statement.on_conflict_do_update(
        index_elements=[table.c.digit_id],
        set_={
            "model_input": statement.excluded.model_input,
            "preprocessing_version": statement.excluded.preprocessing_version,
        },
        # The first write of a drawing wins; only a newer preprocessing replaces its input.
        where=func.coalesce(table.c.preprocessing_version, 0)
        < statement.excluded.preprocessing_version,
    )


def _predictions_upsert() -> Any:
    table = Prediction.__table__
    statement = insert(Prediction)
    keys = ("digit_id", "model_version")
    return statement.on_conflict_do_update(
        index_elements=[table.c[k] for k in keys],
        set_={c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys},
        where=tuple_(
            statement.excluded.kind_rank,
            statement.excluded.predicted_at,
            statement.excluded.event_id,
        )
        < tuple_(table.c.kind_rank, table.c.predicted_at, table.c.event_id),
    )


def _labels_upsert() -> Any:
    table = Label.__table__
    statement = insert(Label)
    return statement.on_conflict_do_update(
        index_elements=[table.c.digit_id],
        set_={
            "label": statement.excluded.label,
            "labeled_at": statement.excluded.labeled_at,
            "event_id": statement.excluded.event_id,
        },
        where=tuple_(statement.excluded.labeled_at, statement.excluded.event_id)
        > tuple_(table.c.labeled_at, table.c.event_id),
    )


def _jobs_upsert() -> Any:
    table = RescoreJob.__table__
    statement = insert(RescoreJob)
    return statement.on_conflict_do_update(
        index_elements=[table.c.job_id],
        set_={
            "started_at": func.least(table.c.started_at, statement.excluded.started_at),
            "updated_at": func.greatest(table.c.updated_at, statement.excluded.updated_at),
            "total": func.greatest(table.c.total, statement.excluded.total),
        },
    )


def _job_items_upsert() -> Any:
    table = RescoreJobItem.__table__
    statement = insert(RescoreJobItem)
    existing, arriving = table.c.skipped, statement.excluded.skipped
    # Scored (no reason) wins over skipped in any order; of two reasons, the smaller stays.
    return statement.on_conflict_do_update(
        index_elements=[table.c.job_id, table.c.digit_id],
        set_={
            "skipped": case(
                (or_(existing.is_(None), arriving.is_(None)), None),
                else_=func.least(existing, arriving),
            )
        },
        where=existing.is_not(None),
    )


def _erasures_upsert() -> Any:
    table = Erasure.__table__
    statement = insert(Erasure)
    # A drawing erased twice keeps its first erasure, whichever arrives first.
    return statement.on_conflict_do_update(
        index_elements=[table.c.digit_id],
        set_={c.name: statement.excluded[c.name] for c in table.columns if c.name != "digit_id"},
        where=tuple_(statement.excluded.erased_at, statement.excluded.event_id)
        < tuple_(table.c.erased_at, table.c.event_id),
    )


@dataclass(frozen=True)
class _JobSeen:
    """What one event says about its job."""

    job_id: uuid.UUID
    kind: str
    model_version: int
    total: int
    at: Any


_DRAWINGS_UPSERT = _drawings_upsert()
_PREDICTIONS_UPSERT = _predictions_upsert()
_LABELS_UPSERT = _labels_upsert()
_JOBS_UPSERT = _jobs_upsert()
_JOB_ITEMS_UPSERT = _job_items_upsert()
_ERASURES_UPSERT = _erasures_upsert()
_IDS = bindparam("ids", type_=ARRAY(UUID(as_uuid=True)))
_ERASED = text("SELECT digit_id FROM erasures WHERE digit_id = ANY(:ids)").bindparams(_IDS)
# Each drawing's rows; a job's item keeps its id (a job counts the drawing as done).
_ERASE_ROWS = (
    text("DELETE FROM predictions WHERE digit_id = ANY(:ids)").bindparams(_IDS),
    text("DELETE FROM rollout_readings WHERE digit_id = ANY(:ids)").bindparams(_IDS),
    text("DELETE FROM rollout_failures WHERE digit_id = ANY(:ids)").bindparams(_IDS),
    text("DELETE FROM labels WHERE digit_id = ANY(:ids)").bindparams(_IDS),
    text("DELETE FROM drawings WHERE digit_id = ANY(:ids)").bindparams(_IDS),
)
_PROMOTIONS_INSERT = insert(Promotion).on_conflict_do_update(
    index_elements=[Promotion.__table__.c.event_id],
    # A promotion stored before offsets were kept gets its offset when replayed.
    set_={"ledger_offset": insert(Promotion).excluded.ledger_offset},
    where=Promotion.__table__.c.ledger_offset.is_(None),
)
_STEPS_INSERT = insert(RolloutStep).on_conflict_do_nothing()


def _readings_upsert() -> Any:
    table = RolloutReading.__table__
    statement = insert(RolloutReading)
    return statement.on_conflict_do_update(
        index_elements=[table.c.rollout_id, table.c.digit_id, table.c.model_version],
        set_={"latency_ms": func.least(table.c.latency_ms, statement.excluded.latency_ms)},
    )


_READINGS_UPSERT = _readings_upsert()
_FAILURES_INSERT = insert(RolloutFailure).on_conflict_do_nothing()
_INPUTS_UPDATE = (
    update(Drawing)
    .where(Drawing.digit_id == bindparam("b_digit_id"))
    .where(func.coalesce(Drawing.preprocessing_version, 0) < bindparam("b_version"))
    .values(model_input=bindparam("b_input"), preprocessing_version=bindparam("b_version"))
)


class HistoryWriter:
    """Writes each kind of event; every method is safe to repeat with the same events."""

    def __init__(self, engine: AsyncEngine, store: ObjectStore, bucket: str) -> None:
        self._engine = engine
        self.store = store
        self._bucket = bucket

    async def drawings(self, drawings: Sequence[InputDrawing]) -> None:
        """Put every image in object storage, then record the drawings with their inputs."""
        unique = {d.event.digit_id: d for d in drawings}
        if not unique:
            return
        async with self._engine.connect() as connection:  # erased already: not put again
            for digit_id in await _erased(connection, unique):
                del unique[digit_id]
        if not unique:
            return
        await self.store.put_many(
            self._bucket, [(drawing_key(d.event.digit_id), d.event.image) for d in unique.values()]
        )
        async with self._engine.begin() as connection:
            await figures.lock(connection)  # an erasure of one of them is committed, or waits
            erased = await _erased(connection, unique)
            rows = [self._drawing_row(d) for i, d in unique.items() if i not in erased]
            if rows:
                await connection.execute(_DRAWINGS_UPSERT, rows)
        if erased:  # erased before it arrived (or replayed after its erasure): its image goes
            await self.store.delete_many(self._bucket, [drawing_key(i) for i in sorted(erased)])

    async def model_inputs(self, inputs: Sequence[tuple[uuid.UUID, bytes, int]]) -> None:
        """Store inputs derived later (rows from before inputs were kept, or an older
        preprocessing), each only over an older one."""
        rows = [
            {"b_digit_id": d, "b_input": model_input, "b_version": version}
            for d, model_input, version in inputs
        ]
        if rows:
            async with self._engine.begin() as connection:
                await connection.execute(_INPUTS_UPDATE, rows)

    def _drawing_row(self, drawing: InputDrawing) -> dict[str, Any]:
        event = drawing.event
        return {
            "digit_id": event.digit_id,
            "submitted_at": event.submitted_at,
            "media_type": event.media_type,
            "width": event.width,
            "height": event.height,
            "size_bytes": len(event.image),
            "image_bucket": self._bucket,
            "image_key": drawing_key(event.digit_id),
            "image_sha256": sha256_hex(event.image),
            "client_source": event.client.source,
            "event_id": event.event_id,
            "model_input": drawing.model_input,
            "preprocessing_version": drawing.preprocessing_version,
        }

    async def predictions(self, events: Sequence[DigitPredicted]) -> None:
        """Upsert predictions by (digit, version) and count job progress."""
        rows = _keep_first(
            (_prediction_row(e) for e in events),
            key=lambda r: (r["digit_id"], r["model_version"]),
            order=_prediction_order,
        )
        if not rows:
            return
        readings = _keep_first(
            (_reading_row(e) for e in events if e.rollout_id is not None),
            key=lambda r: (r["rollout_id"], r["digit_id"], r["model_version"]),
            order=lambda r: r["latency_ms"] if r["latency_ms"] is not None else float("inf"),
        )
        async with self._engine.begin() as connection:
            async with kept_up(connection, (r["digit_id"] for r in rows)):
                await _upsert_unerased(connection, _PREDICTIONS_UPSERT, rows)
                if readings:  # under the figures' lock too: an erasure waits or is seen
                    await _upsert_unerased(connection, _READINGS_UPSERT, readings)
            # A job still counts an erased drawing it scored as done (its id, nothing more).
            await self._job_progress(connection, [e for e in events if e.job_id is not None])

    async def _job_progress(self, connection: Any, events: list[DigitPredicted]) -> None:
        if not events:
            return
        seen = [
            _JobSeen(e.job_id, e.kind, e.model.version, e.job_total or 0, e.occurred_at)
            for e in events
            if e.job_id is not None
        ]
        await _upsert_jobs(connection, seen)
        items = sorted({(e.job_id, e.digit_id) for e in events if e.job_id is not None}, key=str)
        async with progress_kept_up(connection, items):
            await connection.execute(
                _JOB_ITEMS_UPSERT,
                [{"job_id": j, "digit_id": d, "skipped": None} for j, d in items],
            )

    async def skipped(self, events: Sequence[RescoreSkipped]) -> None:
        """Count a job's skipped drawings as done, with the reason (a scored one stays scored)."""
        if not events:
            return
        reasons: dict[tuple[uuid.UUID, uuid.UUID], str] = {}
        for e in events:
            for item in e.skipped:
                key = (e.job_id, item.digit_id)
                reasons[key] = min(item.reason, reasons.get(key, item.reason))
        seen = [
            _JobSeen(e.job_id, e.kind, e.model.version, e.job_total, e.occurred_at) for e in events
        ]
        async with self._engine.begin() as connection:
            await _upsert_jobs(connection, seen)
            async with progress_kept_up(connection, reasons):
                await connection.execute(
                    _JOB_ITEMS_UPSERT,
                    [
                        {"job_id": j, "digit_id": d, "skipped": reason}
                        for (j, d), reason in sorted(reasons.items(), key=lambda kv: str(kv[0]))
                    ],
                )

    async def labels(self, events: Sequence[DigitLabeled]) -> None:
        """Upsert labels; the latest `labeled_at` wins (event id breaks ties)."""
        rows = _keep_first(
            (
                {
                    "digit_id": e.digit_id,
                    "label": e.label,
                    "labeled_at": e.labeled_at,
                    "event_id": e.event_id,
                }
                for e in events
            ),
            key=lambda r: r["digit_id"],
            order=lambda r: (-r["labeled_at"].timestamp(), _negated(r["event_id"])),
        )
        if not rows:
            return
        async with (
            self._engine.begin() as connection,
            kept_up(connection, (r["digit_id"] for r in rows)),
        ):
            await _upsert_unerased(connection, _LABELS_UPSERT, rows)

    async def unrecorded_erasures(self, events: Sequence[DigitErased]) -> list[DigitErased]:
        """The erasures whose drawing has no erasure row yet."""
        if not events:
            return []
        async with self._engine.connect() as connection:
            recorded = await _erased(connection, {e.digit_id for e in events})
        return [e for e in events if e.digit_id not in recorded]

    async def erasures(self, events: Sequence[DigitErased]) -> None:
        """Record erasures and remove what was stored of each drawing: its rows (the figures
        lose what they counted of it), then its image. Safe to repeat: an erasure retried after
        an outage, or replayed, finds less to remove and removes the image again."""
        rows = _keep_first(
            (
                {
                    "digit_id": e.digit_id,
                    "erased_at": e.erased_at,
                    "requested_by": e.requested_by,
                    "reason": e.reason,
                    "event_id": e.event_id,
                }
                for e in events
            ),
            key=lambda r: r["digit_id"],
            order=lambda r: (r["erased_at"], str(r["event_id"])),
        )
        if not rows:
            return
        ids = sorted(r["digit_id"] for r in rows)
        async with self._engine.begin() as connection, kept_up(connection, ids):
            await connection.execute(_ERASURES_UPSERT, rows)
            for statement in _ERASE_ROWS:
                await connection.execute(statement, {"ids": ids})
        await self.store.delete_many(self._bucket, [drawing_key(i) for i in ids])

    async def failures(self, letters: Sequence[DeadLetter]) -> None:
        """Record the drawings a model failed on during a rollout (letters naming one, of a
        drawing: keyed by its digit id); other letters are not the history's to keep."""
        rows = _keep_first(
            (
                {
                    "rollout_id": letter.rollout_id,
                    "digit_id": digit_id,
                    "model_version": letter.model_version,
                    "answered_by": letter.answered_by,
                    "failed_at": letter.failed_at,
                }
                for letter in letters
                if letter.rollout_id is not None
                and letter.model_version is not None
                and (digit_id := _digit_id(letter.source_key)) is not None
            ),
            key=lambda r: (r["rollout_id"], r["digit_id"], r["model_version"]),
            order=lambda r: r["failed_at"],
        )
        if rows:
            async with self._engine.begin() as connection:
                await _upsert_unerased(connection, _FAILURES_INSERT, rows)

    async def ledger(self, entries: Sequence[tuple[LedgerEntry, int]]) -> None:
        """Record the ledger's records with their offsets: promotions (and the flips of a
        comparison they add), and rollout steps as published."""
        promotions = [(e, o) for e, o in entries if isinstance(e, ModelPromoted)]
        steps = {
            e.event_id: {
                "event_id": e.event_id,
                "ledger_offset": offset,
                "rollout_id": e.rollout_id,
                "body": e.model_dump(mode="json"),
            }
            for e, offset in entries
            if isinstance(e, ModelRollout)
        }
        await self.promotions([e for e, _ in promotions], {e.event_id: o for e, o in promotions})
        if steps:
            async with self._engine.begin() as connection:
                await connection.execute(_STEPS_INSERT, list(steps.values()))

    async def promotions(
        self, events: Sequence[ModelPromoted], offsets: dict[uuid.UUID, int] | None = None
    ) -> None:
        """Record promotions (each event once, with its ledger offset when known), and the
        flips of a comparison they add."""
        offsets = offsets or {}
        rows = [
            {
                "event_id": e.event_id,
                "model_name": e.model.name,
                "version": e.model.version,
                "previous_version": e.previous_version,
                "sha256": e.model.sha256,
                "onnx_uri": e.onnx_uri,
                "architecture": e.architecture,
                "metrics": e.metrics,
                "promoted_by": e.promoted_by,
                "reason": e.reason,
                "promoted_at": e.promoted_at,
                "ledger_offset": offsets.get(e.event_id),
                "drift_reference": (
                    e.drift_reference.model_dump(mode="json") if e.drift_reference else None
                ),
            }
            for e in {e.event_id: e for e in events}.values()
        ]
        if rows:
            async with self._engine.begin() as connection, comparisons_kept_up(connection):
                await connection.execute(_PROMOTIONS_INSERT, rows)


async def _erased(connection: Any, digit_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these drawings were erased (read under the figures' lock, so an erasure being
    written either is committed and seen here, or waits for this transaction)."""
    found = await connection.execute(_ERASED, {"ids": sorted(digit_ids)})
    return {digit_id for (digit_id,) in found.all()}


def _digit_id(key: bytes | None) -> uuid.UUID | None:
    try:
        return uuid.UUID((key or b"").decode())
    except ValueError:  # not a drawing's key (or not UTF-8: UnicodeDecodeError is one)
        return None


async def _upsert_unerased(connection: Any, statement: Any, rows: list[dict[str, Any]]) -> None:
    erased = await _erased(connection, {r["digit_id"] for r in rows})
    kept = [r for r in rows if r["digit_id"] not in erased]
    if kept:
        await connection.execute(statement, kept)


async def _upsert_jobs(connection: Any, seen: Sequence[_JobSeen]) -> None:
    """One row per job. Every column is an order-free aggregate over the batch (and, on
    conflict, over the row): a job planned twice (a planner redelivered after a rebalance)
    carries two totals, and the row must not depend on which one a batch saw first."""
    by_job: dict[uuid.UUID, list[_JobSeen]] = defaultdict(list)
    for s in seen:
        by_job[s.job_id].append(s)
    jobs = [
        {
            "job_id": job_id,
            "kind": mine[0].kind,
            "model_version": mine[0].model_version,
            "total": max(s.total for s in mine),
            "started_at": min(s.at for s in mine),
            "updated_at": max(s.at for s in mine),
        }
        for job_id, mine in sorted(by_job.items(), key=lambda item: str(item[0]))
    ]
    if jobs:
        await connection.execute(_JOBS_UPSERT, jobs)


def _prediction_row(event: DigitPredicted) -> dict[str, Any]:
    return {
        "digit_id": event.digit_id,
        "model_version": event.model.version,
        "model_name": event.model.name,
        "model_sha256": event.model.sha256,
        "predicted_digit": event.predicted_digit,
        "confidence": event.confidence,
        "probabilities": event.probabilities,
        "kind": event.kind,
        "kind_rank": KIND_RANK[event.kind],
        "job_id": event.job_id,
        "worker_id": event.worker_id,
        "provider": event.provider,
        "timings": event.timings.model_dump(),
        "predicted_at": event.occurred_at,
        "event_id": event.event_id,
    }


def _reading_row(event: DigitPredicted) -> dict[str, Any]:
    submitted = event.submitted_at
    return {
        "rollout_id": event.rollout_id,
        "digit_id": event.digit_id,
        "model_version": event.model.version,
        "kind": event.kind,
        "predicted_digit": event.predicted_digit,
        "latency_ms": None
        if submitted is None
        else max(0.0, (event.occurred_at - submitted).total_seconds() * 1000),
    }


def _prediction_order(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["kind_rank"], row["predicted_at"], row["event_id"])


def _negated(value: Any) -> int:
    return -int(value.int)


def _keep_first(rows: Iterable[dict[str, Any]], *, key: Any, order: Any) -> list[dict[str, Any]]:
    """One row per key, the smallest by `order`: a batch may repeat a key (redelivery)."""
    best: dict[Any, dict[str, Any]] = {}
    for row in rows:
        k = key(row)
        if k not in best or order(row) < order(best[k]):
            best[k] = row
    return list(best.values())
