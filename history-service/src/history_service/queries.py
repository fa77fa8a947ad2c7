"""Read queries of the history API (SQLAlchemy Core over the async engine)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from history_service.db import (
    Drawing,
    Label,
    Prediction,
    PredictionFlip,
    Promotion,
    RescoreJob,
    RescoreJobItem,
    VersionCount,
    VersionLabels,
    VersionPair,
)
from history_service.figures import MICROS

FLIPS_SHOWN = 50


async def drawings_page(
    conn: AsyncConnection, limit: int, before: tuple[datetime, uuid.UUID] | None
) -> list[dict[str, Any]]:
    """Newest drawings first, keyset-paginated on (submitted_at, digit_id)."""
    query = (
        select(Drawing, Label.label, Label.labeled_at)
        .outerjoin(Label, Label.digit_id == Drawing.digit_id)
        .order_by(Drawing.submitted_at.desc(), Drawing.digit_id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(tuple_(Drawing.submitted_at, Drawing.digit_id) < tuple_(*before))
    rows = (await conn.execute(query)).all()
    return await _with_predictions(conn, rows)


async def drawing(conn: AsyncConnection, digit_id: uuid.UUID) -> dict[str, Any] | None:
    """One drawing with its predictions and label, or None."""
    query = (
        select(Drawing, Label.label, Label.labeled_at)
        .outerjoin(Label, Label.digit_id == Drawing.digit_id)
        .where(Drawing.digit_id == digit_id)
    )
    rows = (await conn.execute(query)).all()
    found = await _with_predictions(conn, rows)
    return found[0] if found else None


async def _with_predictions(conn: AsyncConnection, rows: Any) -> list[dict[str, Any]]:
    ids = [row.digit_id for row in rows]
    by_digit: dict[uuid.UUID, list[dict[str, Any]]] = defaultdict(list)
    if ids:
        predictions = await conn.execute(
            select(Prediction)
            .where(Prediction.digit_id.in_(ids))
            .order_by(Prediction.model_version)
        )
        for p in predictions:
            by_digit[p.digit_id].append(_prediction_dict(p))
    return [{**_drawing_dict(row), "predictions": by_digit[row.digit_id]} for row in rows]


def _drawing_dict(row: Any) -> dict[str, Any]:
    return {
        "digit_id": row.digit_id,
        "submitted_at": row.submitted_at,
        "media_type": row.media_type,
        "width": row.width,
        "height": row.height,
        "image_url": f"/api/digits/{row.digit_id}/image",
        "input_url": f"/api/digits/{row.digit_id}/input.png",
        "label": row.label,
        "labeled_at": row.labeled_at,
    }


def _prediction_dict(p: Any) -> dict[str, Any]:
    return {
        "model_version": p.model_version,
        "model_name": p.model_name,
        "predicted_digit": p.predicted_digit,
        "confidence": p.confidence,
        "probabilities": p.probabilities,
        "kind": p.kind,
        "job_id": p.job_id,
        "predicted_at": p.predicted_at,
    }


async def image_location(conn: AsyncConnection, digit_id: uuid.UUID) -> tuple[str, str, str] | None:
    """(bucket, key, media type) of a drawing's original image."""
    row = (
        await conn.execute(
            select(Drawing.image_bucket, Drawing.image_key, Drawing.media_type).where(
                Drawing.digit_id == digit_id
            )
        )
    ).first()
    return None if row is None else (row.image_bucket, row.image_key, row.media_type)


async def promotions(conn: AsyncConnection) -> list[dict[str, Any]]:
    """The promotion ledger, newest first."""
    rows = await conn.execute(select(Promotion).order_by(Promotion.promoted_at.desc()))
    return [
        {
            "event_id": p.event_id,
            "version": p.version,
            "model_name": p.model_name,
            "previous_version": p.previous_version,
            "architecture": p.architecture,
            "sha256": p.sha256,
            "onnx_uri": p.onnx_uri,
            "metrics": p.metrics,
            "promoted_by": p.promoted_by,
            "reason": p.reason,
            "promoted_at": p.promoted_at,
        }
        for p in rows
    ]


async def predicted_versions(conn: AsyncConnection) -> list[int]:
    """Every model version that has predictions, ascending."""
    rows = await conn.execute(
        select(VersionCount.model_version)
        .where(VersionCount.predictions > 0)
        .distinct()
        .order_by(VersionCount.model_version)
    )
    return [r.model_version for r in rows]


async def version_stats(
    conn: AsyncConnection,
    version: int,
    previous: int | None,
    *,
    flips_limit: int = FLIPS_SHOWN,
    flips_before: uuid.UUID | None = None,
) -> dict[str, Any]:
    """Counts, agreement with `previous`, a page of flips (newest drawings first, before
    `flips_before`) and accuracy on labels for one version, from the maintained figures."""
    counts = (
        await conn.execute(
            select(
                VersionCount.kind, VersionCount.predictions, VersionCount.confidence_micros
            ).where(VersionCount.model_version == version)
        )
    ).all()
    kinds = {kind: int(n) for kind, n, _ in counts}
    predicted, micros = sum(kinds.values()), sum(int(m) for _, _, m in counts)
    labeled, correct = await _label_accuracy(conn, version)
    stats: dict[str, Any] = {
        "version": version,
        "predicted": predicted,
        "live": kinds.get("live", 0),
        "rescore": kinds.get("rescore", 0),
        "candidate": kinds.get("candidate", 0),
        "shadow": kinds.get("shadow", 0),
        "mean_confidence": micros / MICROS / predicted if predicted else None,
        "previous_version": previous,
        "labeled": labeled,
        "label_accuracy": (correct / labeled) if labeled else None,
        "agreement_with_previous": None,
        "compared": 0,
        "flips": [],
        "flips_next": None,
        "flips_by_digit": {},
    }
    if previous is not None:
        stats.update(await _agreement(conn, version, previous))
        # 0: the figures only (the models panel shows no flip list); none flipped: no page to
        # look for (read from the predictions, it would walk every row of the version).
        if flips_limit and stats["flipped"]:
            stats.update(await flips_page(conn, version, previous, flips_limit, flips_before))
        before_labeled, before_correct = await _label_accuracy(conn, previous)
        stats["previous_label_accuracy"] = (
            before_correct / before_labeled if before_labeled else None
        )
    return stats


async def _label_accuracy(conn: AsyncConnection, version: int) -> tuple[int, int]:
    row = (
        await conn.execute(
            select(VersionLabels.labeled, VersionLabels.correct).where(
                VersionLabels.model_version == version
            )
        )
    ).first()
    return (0, 0) if row is None else (int(row.labeled), int(row.correct))


async def _agreement(conn: AsyncConnection, version: int, previous: int) -> dict[str, Any]:
    """How the drawings both versions read are read by each: at most 100 rows (digit pairs)."""
    pairs = await conn.execute(
        select(VersionPair.other_digit, VersionPair.digit, VersionPair.drawings).where(
            VersionPair.model_version == version,
            VersionPair.other_version == previous,
            VersionPair.drawings > 0,
        )
    )
    compared = agreed = 0
    grouped: dict[str, dict[str, int]] = defaultdict(dict)
    for from_, to, count in pairs:
        compared += count
        if from_ == to:
            agreed += count
        else:
            grouped[str(to)][f"from_{from_}"] = int(count)
    return {
        "compared": compared,
        "agreement_with_previous": agreed / compared if compared else None,
        "flipped": compared - agreed,
        "flips_by_digit": dict(grouped),
    }


async def flips_page(
    conn: AsyncConnection, version: int, previous: int, limit: int, before: uuid.UUID | None
) -> dict[str, Any]:
    """Drawings `previous` and `version` read differently, newest first, `limit` at a time;
    `flips_next` is the cursor of the next page (None on the last).

    For a comparison the ledger makes (`version` promoted over `previous`) the flips are kept
    (`prediction_flips`): a page costs O(page). For any other pair they are read from the two
    versions' predictions, walking `version`'s newest first: O(page / share of drawings that
    flip), so a pair that rarely disagrees walks far (the agreement figures beside it are kept
    for every pair)."""
    kept = (
        await conn.execute(
            select(Promotion.event_id)
            .where(Promotion.version == version, Promotion.previous_version == previous)
            .limit(1)
        )
    ).first() is not None
    query = _kept_flips(version, previous) if kept else _read_flips(version, previous)
    digit_id = query.selected_columns.digit_id
    if before is not None:
        query = query.where(digit_id < before)
    rows = (await conn.execute(query.order_by(digit_id.desc()).limit(limit + 1))).all()
    page = rows[:limit]
    return {
        "flips": [
            {"digit_id": f.digit_id, "from": f.from_digit, "to": f.to_digit, "label": f.label}
            for f in page
        ],
        "flips_next": page[-1].digit_id if len(rows) > limit else None,
    }


def _kept_flips(version: int, previous: int) -> Select[uuid.UUID, int, int, int]:
    return (
        select(
            PredictionFlip.digit_id,
            PredictionFlip.from_digit,
            PredictionFlip.to_digit,
            Label.label,
        )
        .outerjoin(Label, Label.digit_id == PredictionFlip.digit_id)
        .where(PredictionFlip.model_version == version, PredictionFlip.other_version == previous)
    )


def _read_flips(version: int, previous: int) -> Select[uuid.UUID, int, int, int]:
    new, old = aliased(Prediction), aliased(Prediction)
    return (
        select(
            new.digit_id,
            old.predicted_digit.label("from_digit"),
            new.predicted_digit.label("to_digit"),
            Label.label,
        )
        .join(old, (old.digit_id == new.digit_id) & (old.model_version == previous))
        .outerjoin(Label, Label.digit_id == new.digit_id)
        .where(new.model_version == version, old.predicted_digit != new.predicted_digit)
    )


SKIPPED_SHOWN = 20


async def rescore_jobs(
    conn: AsyncConnection, job_id: uuid.UUID | None = None
) -> list[dict[str, Any]]:
    """Jobs with their progress, newest first: done counts distinct drawings, scored or skipped
    (one job's drawings that were skipped are listed, up to SKIPPED_SHOWN, when it is asked for)."""
    query = select(RescoreJob).order_by(RescoreJob.started_at.desc()).limit(50)
    if job_id is not None:
        query = query.where(RescoreJob.job_id == job_id)
    rows = (await conn.execute(query)).all()
    examples: list[dict[str, Any]] = []
    if job_id is not None and rows and rows[0].skipped:
        listed = await conn.execute(
            select(RescoreJobItem.digit_id, RescoreJobItem.skipped)
            .where(RescoreJobItem.job_id == job_id, RescoreJobItem.skipped.is_not(None))
            .order_by(RescoreJobItem.digit_id)
            .limit(SKIPPED_SHOWN)
        )
        examples = [{"digit_id": d, "reason": reason} for d, reason in listed.all()]
    return [
        {
            "job_id": r.job_id,
            "kind": r.kind,
            "model_version": r.model_version,
            "done": int(r.done),
            "skipped": int(r.skipped),
            "skipped_drawings": examples,
            "total": r.total,
            "finished": r.done >= r.total,
            "started_at": r.started_at,
            "updated_at": r.updated_at,
        }
        for r in rows
    ]


@dataclass(frozen=True)
class StoredInput:
    """A drawing's stored model input (maybe none yet) and where its original image is."""

    digit_id: uuid.UUID
    model_input: bytes | None
    preprocessing_version: int | None
    image_bucket: str
    image_key: str


async def stored_inputs(conn: AsyncConnection, digit_ids: list[uuid.UUID]) -> list[StoredInput]:
    """The stored inputs of the given drawings (absent ids are not returned), in one query."""
    query = select(
        Drawing.digit_id,
        Drawing.model_input,
        Drawing.preprocessing_version,
        Drawing.image_bucket,
        Drawing.image_key,
    ).where(Drawing.digit_id.in_(digit_ids))
    return [StoredInput(*row) for row in await conn.execute(query)]


async def digit_ids(
    conn: AsyncConnection, after: uuid.UUID | None, limit: int, until: datetime | None = None
) -> list[uuid.UUID]:
    """Stored drawing ids in ascending order (submitted at or before `until`), for planning."""
    query = select(Drawing.digit_id).order_by(Drawing.digit_id).limit(limit)
    if after is not None:
        query = query.where(Drawing.digit_id > after)
    if until is not None:
        query = query.where(Drawing.submitted_at <= until)
    return [r.digit_id for r in await conn.execute(query)]


async def count_drawings(conn: AsyncConnection, until: datetime | None = None) -> int:
    """How many drawings `digit_ids` pages through."""
    query = select(func.count()).select_from(Drawing)
    if until is not None:
        query = query.where(Drawing.submitted_at <= until)
    return int((await conn.execute(query)).scalar_one())


async def labeled(conn: AsyncConnection) -> list[tuple[uuid.UUID, int]]:
    """Stored drawings that carry a label."""
    rows = await conn.execute(
        select(Label.digit_id, Label.label).join(Drawing, Drawing.digit_id == Label.digit_id)
    )
    return [(r.digit_id, r.label) for r in rows]
