"""The history read API (reached by browsers through the gateway under /api/...)."""

from __future__ import annotations

import asyncio
import base64
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from mnistream_common.history_api import (
    ChampionOut,
    DrawingOut,
    DrawingsPage,
    DriftOut,
    LabeledOut,
    ModelInputsIn,
    ModelInputsOut,
    ModelsOut,
    PromotionOut,
    RescoreJobOut,
    RolloutOut,
    StoredCount,
    VersionStats,
)
from mnistream_common.preprocessing import input_png
from mnistream_common.rescore import job_id_of_promotion
from mnistream_common.storage import ObjectStore, S3Uri
from pydantic import AwareDatetime
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from history_service import queries, rollouts
from history_service.consumers import Health
from history_service.drift import DriftMonitor
from history_service.inputs import InputSource

router = APIRouter()
# Versions are Postgres integers: a larger number is a 422, not a database error.
MAX_VERSION = 2**31 - 1


@dataclass
class ReadContext:
    """What the read routes need."""

    engine: AsyncEngine
    store: ObjectStore
    health: Health
    drawings_bucket: str
    inputs: InputSource
    rollout_evidence: rollouts.Evidence = field(default_factory=rollouts.Evidence)


def get_context(request: Request) -> ReadContext:
    """The context built by the app's lifespan."""
    context: ReadContext = request.app.state.history
    return context


Context = Annotated[ReadContext, Depends(get_context)]


def encode_cursor(drawing: DrawingOut) -> str:
    """An opaque cursor pointing just after `drawing` in newest-first order."""
    raw = f"{drawing.submitted_at.isoformat()}|{drawing.digit_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position a cursor points at; 422 when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, digit_id = raw.split("|")
        return datetime.fromisoformat(when), uuid.UUID(digit_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(422, "`before` is not a cursor from `next_cursor`") from exc


NotFound: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown digit id."}}


@router.get("/api/digits", response_model=DrawingsPage, summary="Drawings, newest first")
async def list_drawings(
    context: Context,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: Annotated[str | None, Query(description="`next_cursor` of the last page")] = None,
) -> DrawingsPage:
    """A page of drawings with their predictions per model version and their labels."""
    position = decode_cursor(before) if before else None
    async with context.engine.connect() as conn:
        rows = await queries.drawings_page(conn, limit, position)
    items = [DrawingOut.model_validate(r) for r in rows]
    cursor = encode_cursor(items[-1]) if len(items) == limit else None
    return DrawingsPage(items=items, next_cursor=cursor)


@router.get("/api/digits/{digit_id}", response_model=DrawingOut, responses=NotFound)
async def get_drawing(digit_id: uuid.UUID, context: Context) -> DrawingOut:
    """One drawing."""
    async with context.engine.connect() as conn:
        row = await queries.drawing(conn, digit_id)
    if row is None:
        raise HTTPException(404, f"no drawing with id {digit_id}")
    return DrawingOut.model_validate(row)


async def _original(context: ReadContext, digit_id: uuid.UUID) -> tuple[bytes, str]:
    async with context.engine.connect() as conn:
        location = await queries.image_location(conn, digit_id)
    if location is None:
        raise HTTPException(404, f"no drawing with id {digit_id}")
    bucket, key, media_type = location
    try:
        return await context.store.get(S3Uri(bucket, key)), media_type
    except Exception as exc:  # storage down: say so instead of a 500
        raise HTTPException(503, "object storage is unavailable; try again shortly") from exc


# A drawing's bytes never change, but it can be erased: caches may keep it an hour, and only
# the browser's own (no shared proxy keeps a copy that outlives the erasure).
IMAGE_CACHE = {"Cache-Control": "private, max-age=3600"}


@router.get(
    "/api/digits/{digit_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}, **NotFound},
)
async def original_image(digit_id: uuid.UUID, context: Context) -> Response:
    """The drawing exactly as uploaded."""
    data, media_type = await _original(context, digit_id)
    return Response(data, media_type=media_type, headers=IMAGE_CACHE)


@router.get(
    "/api/digits/{digit_id}/input.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **NotFound},
)
async def model_input(digit_id: uuid.UUID, context: Context) -> Response:
    """The 28×28 image the models read (the stored input; made once from the original)."""
    found = await context.inputs.model_inputs([digit_id])
    if found.missing:
        raise HTTPException(404, f"no drawing with id {digit_id}")
    if found.unusable:
        raise HTTPException(422, f"this drawing cannot be preprocessed: {found.unusable[0].reason}")
    png = await asyncio.to_thread(input_png, found.inputs[0].model_input)
    # Not immutable: a new preprocessing version makes another image of the same drawing.
    return Response(png, media_type="image/png", headers=IMAGE_CACHE)


@router.get("/api/models", response_model=ModelsOut, summary="Champion, ledger, versions")
async def models(context: Context) -> ModelsOut:
    """The champion (with accuracy on user labels), the promotion ledger, versions seen."""
    async with context.engine.connect() as conn:
        ledger = await queries.promotions(conn)
        versions = await queries.predicted_versions(conn)
        champion = None
        if ledger:
            stats = await queries.version_stats(conn, ledger[0]["version"], None)
            champion = ChampionOut(
                **ledger[0], labeled=stats["labeled"], label_accuracy=stats["label_accuracy"]
            )
    return ModelsOut(
        champion=champion,
        promotions=[PromotionOut.model_validate(p) for p in ledger],
        versions=versions,
    )


@router.get("/api/models/{version}", response_model=VersionStats, summary="Flip report")
async def model_version(
    version: Annotated[int, Path(ge=1, le=MAX_VERSION)],
    context: Context,
    against: Annotated[
        int | None, Query(ge=1, le=MAX_VERSION, description="Compare with this version")
    ] = None,
    flips_limit: Annotated[
        int,
        Query(ge=0, le=1000, description="Flips per page, newest drawings first (0: none)"),
    ] = queries.FLIPS_SHOWN,
    flips_before: Annotated[
        uuid.UUID | None, Query(description="The next page: the flips_next of this one")
    ] = None,
) -> VersionStats:
    """How `version` reads the stored drawings compared with the champion before it (read from
    figures kept up as predictions arrive: the same cost at any number of drawings). Against
    another version (`against`, or a candidate against the champion) the page of flips is read
    from the predictions and walks further the less often the two disagree."""
    async with context.engine.connect() as conn:
        ledger = await queries.promotions(conn)
        previous = against if against is not None else _previous_of(version, ledger)
        stats = await queries.version_stats(
            conn, version, previous, flips_limit=flips_limit, flips_before=flips_before
        )
    if stats["predicted"] == 0 and not any(p["version"] == version for p in ledger):
        raise HTTPException(404, f"model version {version} has no predictions and no promotion")
    return VersionStats.model_validate(stats)


def _previous_of(version: int, ledger: list[dict[str, Any]]) -> int | None:
    """The champion before `version` was promoted; for a candidate, the current champion."""
    for promotion in ledger:
        if promotion["version"] == version:
            previous: int | None = promotion["previous_version"]
            return previous
    return ledger[0]["version"] if ledger else None


@router.get("/api/drift", response_model=DriftOut, summary="Drift against the champion")
async def drift(
    request: Request,
    last: Annotated[
        int | None, Query(ge=50, le=5000, description="Drawings in the short window")
    ] = None,
) -> DriftOut:
    """Each drift signal of the last LAST drawings and of the last hour (its newest 5,000 at
    most), scored against the champion's reference, with each serving version's accuracy
    estimated from its confidence beside the accuracy measured on labels."""
    monitor: DriftMonitor = request.app.state.drift
    report = await monitor.report(last or monitor.last)
    return report


@router.get("/api/rollouts", response_model=list[RolloutOut], summary="Rollouts and verdicts")
async def list_rollouts(
    context: Context,
    limit: Annotated[int, Query(ge=1, le=100, description="The newest this many")] = 10,
) -> list[RolloutOut]:
    """Canary and shadow rollouts, newest first (a running one is first), each with what each
    version read during it, its accuracy on user labels and the verdict."""
    async with context.engine.connect() as conn:
        return await rollouts.rollouts(conn, context.rollout_evidence, limit)


@router.get("/api/rollouts/{rollout_id}", response_model=RolloutOut, responses=NotFound)
async def get_rollout(rollout_id: uuid.UUID, context: Context) -> RolloutOut:
    """One rollout's course and verdict."""
    async with context.engine.connect() as conn:
        found = await rollouts.rollout(conn, rollout_id, context.rollout_evidence)
    if found is None:
        raise HTTPException(404, f"the ledger has no rollout {rollout_id}")
    return found


@router.get("/api/rescore-jobs", response_model=list[RescoreJobOut], summary="Rescore progress")
async def list_jobs(
    context: Context, active: Annotated[bool, Query(description="Only unfinished jobs")] = False
) -> list[RescoreJobOut]:
    """Recent rescore and evaluation jobs with done/total."""
    jobs = await _jobs(context, None)
    return [j for j in jobs if not (active and (j.finished or j.superseded))]


@router.get("/api/rescore-jobs/{job_id}", response_model=RescoreJobOut, responses=NotFound)
async def get_job(job_id: uuid.UUID, context: Context) -> RescoreJobOut:
    """One job's progress."""
    jobs = await _jobs(context, job_id)
    if not jobs:
        raise HTTPException(404, f"no rescore job with id {job_id}")
    return jobs[0]


async def _jobs(context: ReadContext, job_id: uuid.UUID | None) -> list[RescoreJobOut]:
    async with context.engine.connect() as conn:
        jobs = await queries.rescore_jobs(conn, job_id)
        ledger = await queries.promotions(conn)
    return [RescoreJobOut(**j, superseded=superseded(j, ledger)) for j in jobs]


def superseded(job: dict[str, Any], ledger: list[dict[str, Any]]) -> bool:
    """An unfinished rescore job whose promotion is not the newest one.

    Only the newest promotion's job is current: an older one is superseded even when a rollback
    made its version the champion again (the rollback plans a job of its own).
    """
    if job["kind"] != "rescore" or job["finished"]:
        return False
    return not ledger or job["job_id"] != job_id_of_promotion(ledger[0]["event_id"])


UNTIL = Query(description="Only drawings submitted at or before this time (ISO 8601)")


@router.get("/internal/digit-ids", summary="Stored ids, ascending (for rescore planning)")
async def stored_ids(
    context: Context,
    after: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=50_000)] = 10_000,
    until: Annotated[AwareDatetime | None, UNTIL] = None,
) -> list[uuid.UUID]:
    """Every stored drawing id, paged by `after`."""
    async with context.engine.connect() as conn:
        return await queries.digit_ids(conn, after, limit, until)


@router.get("/internal/digit-ids/count", summary="How many ids /internal/digit-ids pages through")
async def stored_count(
    context: Context, until: Annotated[AwareDatetime | None, UNTIL] = None
) -> StoredCount:
    """The number of stored drawings (submitted at or before `until`)."""
    async with context.engine.connect() as conn:
        return StoredCount(count=await queries.count_drawings(conn, until))


@router.post(
    "/internal/model-inputs",
    response_model=ModelInputsOut,
    summary="The model inputs of up to 10,000 drawings (for rescoring)",
)
async def model_inputs(body: ModelInputsIn, context: Context) -> Response:
    """Each drawing's 28×28 input, in one query; inputs missing or older than the current
    preprocessing are made from the originals and stored first."""
    found = await context.inputs.model_inputs(body.digit_ids)
    return Response(found.model_dump_json(), media_type="application/json")


@router.get("/internal/labeled", summary="Stored drawings with a user label")
async def labeled(context: Context) -> list[LabeledOut]:
    """(digit id, label) of every labeled drawing, for the promotion gate."""
    async with context.engine.connect() as conn:
        rows = await queries.labeled(conn)
    return [LabeledOut(digit_id=d, label=label) for d, label in rows]


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(context: Context) -> Response:
    """Postgres and MinIO reachable and the last write succeeded."""
    import json

    postgres = True
    try:
        async with context.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:  # any failure: not ready
        postgres = False
    minio = await context.store.ping(context.drawings_bucket)
    health = context.health
    ready = postgres and minio and health.storage_ok
    body = {
        "ready": ready,
        "postgres": postgres,
        "minio": minio,
        "last_error": health.last_error,
        "written": health.written,
    }
    return Response(
        json.dumps(body), status_code=200 if ready else 503, media_type="application/json"
    )
