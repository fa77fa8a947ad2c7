"""REFERENCE, NOT PART OF THE PRODUCT: the least an HTTP upload endpoint can do on this machine.

A Starlette app behind the same uvicorn as the gateway: it reads the body the load generator
sends (a raw `image/png`, or the `file` field of a multipart form, parsed as the gateway parses
it) and answers 202 with a new id at once: no decode, no checks, no Kafka. docs/design.md
sets the gateway's ingest target against it (≥ 50 %), so the target measures what the gateway
adds to HTTP itself, on the same cores, in the same run.
"""

from __future__ import annotations

import uuid

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


async def upload(request: Request) -> Response:
    """Read the whole body; 202 with an id."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with request.form() as form:
            file = form.get("file")
            if not isinstance(file, UploadFile):
                return JSONResponse({"detail": "no file field"}, status_code=422)
            size = len(await file.read())
    else:
        size = len(await request.body())
    if not size:
        return JSONResponse({"detail": "empty body"}, status_code=422)
    return JSONResponse({"digit_id": str(uuid.uuid4())}, status_code=202)


async def healthz(_: Request) -> Response:
    """Up."""
    return PlainTextResponse("ok")


app = Starlette(
    routes=[
        Route("/api/predictions", upload, methods=["POST"]),
        Route("/healthz", healthz),
    ]
)
