"""Request bodies capped before they are read: an ASGI middleware for the HTTP services.

A route that parses its body (FastAPI does, before any check of the route runs) would otherwise
read whatever arrives, a chunked multi-GB body included, and answer 422 only afterwards. Here a
declared Content-Length over the route's limit is answered 413 without reading a byte, and a
chunked body is cut off as soon as it passes the limit.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# What a JSON route of ours ever needs ({"label": 7}, {"since": "..."}, a chunk's ids).
JSON_BODY_LIMIT = 4 * 1024


class BodyLimit:
    """Refuses (413) a body over its route's limit: `limits` by path prefix, else `default`.
    A limit of None leaves a route that reads its stream with a limit of its own alone."""

    def __init__(
        self, app: ASGIApp, default: int, limits: Mapping[str, int | None] | None = None
    ) -> None:
        self.app, self.default = app, default
        # Longest prefix first, so /api/predictions wins over /api.
        self.limits = sorted((limits or {}).items(), key=lambda item: -len(item[0]))

    def limit_for(self, path: str) -> int | None:
        """The most bytes a body sent to `path` may have (None: the route decides)."""
        return next(
            (limit for prefix, limit in self.limits if path.startswith(prefix)), self.default
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, _message(limit))
            return
        received = 0

        async def capped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI re-raises an HTTPException met while reading the body, so the
                    # route answers 413 (and the server closes the connection, unread).
                    raise HTTPException(413, _message(limit))
            return message

        await self.app(scope, capped, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _message(limit: int) -> str:
    return f"the request body is larger than this route accepts ({limit:,} bytes at most)"


async def _refuse(send: Send, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [*headers, (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})
