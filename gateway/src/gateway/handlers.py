"""HTTP routes of the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from typing import Annotated, Any
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from mnistream_common import tracing
from mnistream_common.events import ClientInfo, DigitLabeled, DigitSubmitted, utc_now
from mnistream_common.logs import get_logger
from mnistream_common.preprocessing import PREPROCESSING_VERSION
from opentelemetry.trace import Span, SpanKind
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from gateway.state import GatewayState
from gateway.uploads import UploadRejectedError, ValidUpload, validate_upload

log = get_logger(__name__)
router = APIRouter()

JSON = "application/json"
# Multipart boundaries and part headers on top of the image itself.
MULTIPART_OVERHEAD = 16 * 1024
BODY_TIMEOUT_S = 10.0


def get_state(request: Request) -> GatewayState:
    """The gateway's state, built in the app's lifespan."""
    state: GatewayState = request.app.state.gateway
    return state


State = Annotated[GatewayState, Depends(get_state)]


UPLOAD_SPAN = {"http.request.method": "POST", "http.route": "/api/predictions"}


class Accepted(BaseModel):
    """The answer to an accepted upload."""

    digit_id: uuid.UUID
    status: str = Field(description="`accepted`, or `predicted` when `wait` was met.")
    result_url: str
    events_url: str = "/api/events"
    prediction: dict[str, Any] | None = None
    trace_id: str | None = Field(
        default=None, description="The upload's OpenTelemetry trace (when tracing is on)."
    )
    trace_url: str | None = Field(
        default=None, description="Where that trace is shown (when TRACE_URL is set)."
    )


class LabelRequest(BaseModel):
    """A person's answer to "which digit is this?"."""

    label: int = Field(ge=0, le=9, description="The true digit, 0-9.")


class LabelAccepted(BaseModel):
    """A label on its way to the history."""

    digit_id: uuid.UUID
    label: int


class Problem(BaseModel):
    """An error a person can act on."""

    detail: str


async def validation_problem(request: Request, exc: Exception) -> JSONResponse:
    """A request that does not match the API, as a `Problem` (the shape the OpenAPI promises)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse({"detail": _invalid_request(errors)}, status_code=422)


def _invalid_request(errors: Sequence[Any]) -> str:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', error)}"
        for error in errors[:5]
        if isinstance(error, dict)
    )
    return f"the request is invalid: {problems}"


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem} for code in (400, 404, 408, 413, 415, 422, 429, 503)
}


@router.post(
    "/api/predictions",
    status_code=202,
    response_model=Accepted,
    responses={200: {"model": Accepted}, **ERRORS},
    summary="Submit a drawing",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["image"],
                        "properties": {"image": {"type": "string", "format": "binary"}},
                    }
                },
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
async def submit_drawing(
    request: Request,
    state: State,
    wait: Annotated[
        int,
        Query(
            ge=0,
            le=60_000,
            description="Wait up to this many ms for the prediction (at most MAX_WAIT_MS, "
            "5000 by default).",
        ),
    ] = 0,
) -> Response:
    """Accept a PNG or JPEG drawing (multipart field `image`, or a raw image body) for reading.

    202 with the digit id once Kafka has the drawing; with `wait`, 200 and the prediction if it
    arrives in time.
    """
    if wait > state.settings.max_wait_ms:
        raise HTTPException(422, f"wait must be at most {state.settings.max_wait_ms} ms")
    # A refusal (4xx) is the client's, not a failure of the upload's span (5xx are).
    with (
        tracing.span(
            "POST /api/predictions",
            kind=SpanKind.SERVER,
            attributes=UPLOAD_SPAN,
            failed_by_exceptions=False,
        ) as span,
        _span_status(span),
    ):
        state.rate_limit(request)
        upload = await _read_upload(request, state)
        digit_id = state.new_digit_id()
        span.set_attribute("mnistream.digit_id", str(digit_id))
        waiter = state.hub.expect(digit_id) if wait else None
        try:
            await state.publish_submitted(_submitted(digit_id, upload, request, state))
            state.hub.accepted(digit_id)
            prediction = await _await_prediction(waiter, wait)
        finally:
            state.hub.forget(digit_id)
        status = "predicted" if prediction else "accepted"
        span.set_attribute("mnistream.status", status)
        span.set_attribute("http.response.status_code", 200 if prediction else 202)
    trace_id = tracing.trace_id(span)
    link = state.settings.trace_url
    body = Accepted(
        digit_id=digit_id,
        status=status,
        result_url=f"/api/digits/{digit_id}",
        prediction=prediction,
        trace_id=trace_id,
        trace_url=link.replace("{trace_id}", trace_id) if link and trace_id else None,
    )
    state.metrics.uploads.labels(outcome=status).inc()
    state.upload_log.accepted(
        digit_id, len(upload.data), predicted=prediction is not None, trace_id=trace_id
    )
    return Response(body.model_dump_json(), status_code=200 if prediction else 202, media_type=JSON)


@contextlib.contextmanager
def _span_status(span: Span) -> Iterator[None]:
    """The answer's status on the upload's span; the span failed only for a 5xx or an error."""
    try:
        yield
    except HTTPException as exc:
        span.set_attribute("http.response.status_code", exc.status_code)
        if exc.status_code >= 500:
            tracing.failed(span, str(exc.detail))
        raise
    except Exception as exc:
        span.record_exception(exc)
        tracing.failed(span, f"{type(exc).__name__}: {exc}")
        raise


async def _await_prediction(
    waiter: asyncio.Future[dict[str, Any]] | None, wait_ms: int
) -> dict[str, Any] | None:
    if waiter is None:
        return None
    try:
        return await asyncio.wait_for(waiter, wait_ms / 1000)
    except TimeoutError:
        return None


def client_info(request: Request, state: GatewayState) -> ClientInfo:
    """Who sent a request, as far as the events keep it (no address with RECORD_CLIENT_ADDRESS
    off)."""
    keep_address = state.settings.record_client_address and request.client is not None
    return ClientInfo(
        source=request.headers.get("x-mnistream-source", "api")[:64],
        user_agent=(request.headers.get("user-agent") or "")[:512] or None,
        remote_addr=request.client.host if keep_address and request.client else None,
    )


def _submitted(
    digit_id: uuid.UUID, upload: ValidUpload, request: Request, state: GatewayState
) -> DigitSubmitted:
    return DigitSubmitted(
        digit_id=digit_id,
        submitted_at=utc_now(),
        media_type="image/png" if upload.media_type == "image/png" else "image/jpeg",
        image=upload.data,
        width=upload.width,
        height=upload.height,
        model_input=upload.model_input,
        preprocessing_version=PREPROCESSING_VERSION,
        client=client_info(request, state),
    )


async def _read_upload(request: Request, state: GatewayState) -> ValidUpload:
    limit = state.settings.max_upload_bytes
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type == "multipart/form-data":
            data, declared = await _read_multipart(request, limit)
        elif content_type in ("image/png", "image/jpeg"):
            data, declared = await _read_body(request, limit), content_type
        else:
            raise UploadRejectedError(
                415,
                f"unsupported Content-Type {content_type or '(none)'!r}; send multipart/form-data "
                "with an `image` field, or a raw image/png or image/jpeg body",
            )
        # Decoding a large image takes tens of ms: off the event loop, so a few big uploads
        # cannot stall every other request (and PIL releases the GIL while it decodes).
        return await asyncio.to_thread(
            validate_upload, data, declared, max_side=state.settings.max_image_side
        )
    except UploadRejectedError as exc:
        state.metrics.uploads.labels(outcome=f"rejected_{exc.status_code}").inc()
        raise HTTPException(exc.status_code, exc.message) from exc


async def _read_body(request: Request, limit: int) -> bytes:
    """Read at most `limit` bytes, refusing as soon as more arrive (not after reading it all)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise _too_large(len(body), limit, at_least=True)
    except TimeoutError:
        raise UploadRejectedError(
            408, f"the upload took longer than {BODY_TIMEOUT_S:.0f} s to arrive; send it faster"
        ) from None
    return bytes(body)


def _too_large(size: int, limit: int, *, at_least: bool = False) -> UploadRejectedError:
    # Rounded up: an upload a few bytes over the limit must not read as "512 KB; the limit is 512".
    shown = f"more than {limit // 1024} KB" if at_least else f"{math.ceil(size / 1024)} KB"
    return UploadRejectedError(413, f"the upload is {shown}; the limit is {limit // 1024} KB")


async def _read_multipart(request: Request, limit: int) -> tuple[bytes, str | None]:
    raw = await _read_body_multipart(request, limit + MULTIPART_OVERHEAD)

    async def replay() -> AsyncGenerator[bytes, None]:
        yield raw

    parser = MultiPartParser(
        request.headers, replay(), max_files=1, max_fields=10, max_part_size=limit
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise UploadRejectedError(400, f"the multipart body is malformed: {exc.message}") from exc
    image = form.get("image")
    if not isinstance(image, UploadFile):
        raise UploadRejectedError(
            422, "the multipart body has no file field named `image`; send the drawing as `image`"
        )
    data = await image.read()
    if len(data) > limit:
        raise _too_large(len(data), limit)
    return data, image.content_type


async def _read_body_multipart(request: Request, limit: int) -> bytes:
    try:
        return await _read_body(request, limit)
    except UploadRejectedError as exc:
        if exc.status_code == 413:
            raise _too_large(0, limit - MULTIPART_OVERHEAD, at_least=True) from None
        raise


def label_guard(request: Request, state: State) -> None:
    """Labels feed the promotion gate, so they are only taken as JSON (a cross-site form or a
    `text/plain` fetch cannot send that without CORS, which the gateway does not grant), from
    the gateway's own pages or ALLOWED_ORIGINS, at LABEL_RATE_LIMIT_PER_MINUTE per client.
    A dependency, so it runs before the body is validated."""
    try:
        _check_label_request(request, state)
    except HTTPException as exc:
        state.metrics.labels.labels(outcome=f"rejected_{exc.status_code}").inc()
        raise
    state.label_rate_limit(request)


@router.post(
    "/api/digits/{digit_id}/label",
    status_code=202,
    response_model=LabelAccepted,
    responses={**ERRORS, 403: {"model": Problem}},
    summary="Say which digit a drawing really is",
    dependencies=[Depends(label_guard)],
)
async def label_drawing(
    digit_id: uuid.UUID, body: LabelRequest, request: Request, state: State
) -> LabelAccepted:
    """Publish the true label of a stored drawing (the latest label wins)."""
    if not state.hub.recently_accepted(digit_id) and not await state.drawing_exists(digit_id):
        raise HTTPException(404, f"no drawing with id {digit_id}")
    event = DigitLabeled(
        digit_id=digit_id,
        label=body.label,
        labeled_at=utc_now(),
        client=client_info(request, state),
    )
    await state.publish_labeled(event)
    state.metrics.labels.labels(outcome="accepted").inc()
    return LabelAccepted(digit_id=digit_id, label=body.label)


def _check_label_request(request: Request, state: GatewayState) -> None:
    origin = request.headers.get("origin")
    if origin is not None and not _same_site(origin, request, state):
        raise HTTPException(
            403,
            f"labels from pages of {origin} are not accepted; label from the gateway's own page "
            "(or add the origin to ALLOWED_ORIGINS)",
        )
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != JSON:
        raise HTTPException(
            415, f"a label is sent as {JSON} (got {content_type or 'no Content-Type'})"
        )


def _same_site(origin: str, request: Request, state: GatewayState) -> bool:
    """The page's origin is the gateway itself (the Host it was reached at) or an allowed one."""
    origin = origin.rstrip("/")
    if origin in state.settings.label_origins:
        return True
    host = request.headers.get("host", "")
    return bool(host) and origin in (f"http://{host}", f"https://{host}")


@router.get("/api/events", summary="Server-Sent Events: predictions, rescore progress, promotions")
async def events(request: Request, state: State) -> EventSourceResponse:
    """A stream of `prediction`, `rescore` and `promotion` events; comments keep it open."""

    async def stream() -> AsyncIterator[ServerSentEvent]:
        yield ServerSentEvent(event="hello", data=state.hello())
        async for event in state.hub.subscribe():
            if await request.is_disconnected():
                return
            yield ServerSentEvent(event=event.name, data=json.dumps(event.data))

    return EventSourceResponse(stream(), ping=15, send_timeout=30)


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: Kafka reachable and a model being served")
async def readyz(state: State) -> JSONResponse:
    """200 when Kafka answers and a champion has been promoted, else 503 with the reason."""
    report = await state.readiness()
    return JSONResponse(report, status_code=200 if report["ready"] else 503)


async def history_proxy(request: Request, state: State) -> Response:
    """Forwarded to history-service (see its OpenAPI for the shapes); errors as `Problem`s."""
    path = request.url.path
    # `..` (also as %2e%2e or with %2F) would climb out of /api to history's internal routes.
    if any(segment in (".", "..") for segment in path.split("/")):
        raise HTTPException(404, "no such resource: a path may not contain `.` or `..` segments")
    try:
        # Re-encoded: a decoded path may hold characters a URL cannot (control bytes, spaces).
        upstream = await state.history.http.get(quote(path), params=request.query_params)
    except httpx.HTTPError as exc:
        log.warning("history-service unreachable", error=str(exc))
        raise HTTPException(503, "the history service is unreachable; try again shortly") from exc
    headers = {
        k: v
        for k, v in upstream.headers.items()
        if k.lower() in ("content-type", "cache-control", "etag")
    }
    if upstream.status_code == 422:
        return JSONResponse({"detail": _upstream_problem(upstream)}, status_code=422)
    return Response(upstream.content, status_code=upstream.status_code, headers=headers)


def _upstream_problem(upstream: httpx.Response) -> str:
    """history-service's validation error as one readable sentence."""
    try:
        detail = upstream.json().get("detail")
    except ValueError:
        detail = None
    return detail if isinstance(detail, str) else _invalid_request(detail or [])


for _prefix in ("/api/digits", "/api/models", "/api/rescore-jobs", "/api/rollouts", "/api/drift"):
    router.add_api_route(
        _prefix + "{rest:path}",
        history_proxy,
        methods=["GET"],
        summary=f"History ({_prefix}...), served by history-service",
        responses=ERRORS,
        name=f"history{_prefix.replace('/', '_')}",
    )
