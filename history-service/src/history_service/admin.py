"""The operator's HTTP surface of history-service: a replay and erasures, behind a bearer token.

Not behind the gateway: the gateway forwards only the public read API (`/api/...`), so the admin
routes are reached on history-service's own port, by `mnistream replay history` and
`mnistream erase`.
With no `ADMIN_TOKEN` set the routes answer 403 and do nothing.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Protocol

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from mnistream_common.history_api import EraseIn, EraseOut, ReplayIn, ReplayOut

admin_router = APIRouter(prefix="/admin", tags=["admin"])
bearer = HTTPBearer(auto_error=False, description="ADMIN_TOKEN of history-service")


class Replayer(Protocol):
    """What a replay needs from the running service: its own consumers, stopped and restarted."""

    async def replay(self, since: datetime | None) -> dict[str, int]: ...


class Eraser(Protocol):
    """What an erasure needs: the ledger written, and this service seen applying it."""

    async def erase(self, request: EraseIn) -> EraseOut: ...


class NotStoredError(LookupError):
    """No such drawing is stored (nor was it erased)."""


class ErasureUnavailableError(RuntimeError):
    """Kafka did not take the erasure; nothing was erased."""


class ReplayRefusedError(Exception):
    """The group cannot be rewound now; the message says why and what to do."""


def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """A bearer token equal to ADMIN_TOKEN (compared in constant time), or no admin action."""
    token: str = request.app.state.admin_token
    if not token:
        raise HTTPException(403, "the admin API is off: set ADMIN_TOKEN for history-service")
    given = credentials.credentials if credentials else ""
    if not secrets.compare_digest(given.encode(), token.encode()):
        raise HTTPException(
            401,
            "a valid admin token is required (Authorization: Bearer <ADMIN_TOKEN>)",
            headers={"WWW-Authenticate": "Bearer"},
        )


@admin_router.post(
    "/replay",
    response_model=ReplayOut,
    dependencies=[Depends(require_admin)],
    summary="Rebuild the history from the topics",
    responses={401: {"description": "No or wrong token"}, 403: {"description": "Admin off"}},
)
async def replay(body: ReplayIn, request: Request) -> ReplayOut:
    """Stop this service's consumers, rewind the `history` group, and consume again.

    The writes are idempotent upserts, so re-reading into a full database changes nothing and
    into an emptied one (`history-service reset`) rebuilds it.
    """
    replayer: Replayer = request.app.state.replayer
    try:
        records = await replayer.replay(body.since)
    except ReplayRefusedError as exc:
        raise HTTPException(409, str(exc)) from exc
    return ReplayOut(records=records, total=sum(records.values()))


@admin_router.post(
    "/erasures",
    response_model=EraseOut,
    dependencies=[Depends(require_admin)],
    summary="Erase a drawing for good",
    responses={
        202: {"description": "In the ledger, not applied yet", "model": EraseOut},
        401: {"description": "No or wrong token"},
        403: {"description": "Admin off"},
        404: {"description": "No such drawing is stored"},
        503: {"description": "Kafka did not take it; nothing was erased"},
    },
)
async def erase(body: EraseIn, request: Request, response: Response) -> EraseOut:
    """Erase a drawing: its rows, its image, and its record in digits.submitted (compacted
    away within a day); a replay never brings it back. 200 once this service has removed it
    (an erased drawing asked again answers 200 with `already_erased`), 202 while pending."""
    eraser: Eraser = request.app.state.eraser
    try:
        erased = await eraser.erase(body)
    except NotStoredError as exc:
        raise HTTPException(404, str(exc)) from exc
    except ErasureUnavailableError as exc:
        raise HTTPException(503, str(exc)) from exc
    if not erased.applied:
        response.status_code = 202
    return erased
