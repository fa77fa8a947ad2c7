"""Reading history-service's internal API (stored ids) from other services and the CLI."""

from __future__ import annotations

import uuid

import httpx

ID_PAGE = 10_000


async def stored_digit_ids(history: httpx.AsyncClient) -> list[uuid.UUID]:
    """Every stored drawing id, ascending, paged through history-service."""
    ids: list[uuid.UUID] = []
    after: uuid.UUID | None = None
    while True:
        params: dict[str, str | int] = {"limit": ID_PAGE}
        if after is not None:
            params["after"] = str(after)
        response = await history.get("/internal/digit-ids", params=params)
        response.raise_for_status()
        page = [uuid.UUID(value) for value in response.json()]
        ids.extend(page)
        if len(page) < ID_PAGE:
            return ids
        after = page[-1]
