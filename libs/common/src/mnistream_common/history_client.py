"""The one client of history-service's HTTP API: typed answers, and errors a person can act on.

Used by the gateway, the rescore workers, the CLI and the bench; every URL of history-service
is written here and nowhere else (the gateway's read proxy forwards paths it did not write).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from mnistream_common.history_api import (
    DriftOut,
    EraseIn,
    EraseOut,
    LabeledOut,
    ModelInputsIn,
    ModelInputsOut,
    ModelsOut,
    ReplayIn,
    ReplayOut,
    RescoreJobOut,
    RolloutOut,
    StoredCount,
    VersionStats,
)

ID_PAGE = 10_000
M = TypeVar("M", bound=BaseModel)
_JOBS = TypeAdapter(list[RescoreJobOut])
_IDS = TypeAdapter(list[uuid.UUID])
_LABELED = TypeAdapter(list[LabeledOut])
_ROLLOUTS = TypeAdapter(list[RolloutOut])


class HistoryUnavailableError(RuntimeError):
    """history-service did not answer, or failed (5xx): trying again later may work."""


class HistoryRefusedError(RuntimeError):
    """history-service answered, and refused (4xx): the message carries its `detail`."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"history-service refused ({status_code}): {detail}")
        self.status_code = status_code
        self.detail = detail


class HistoryClient:
    """history-service's API over one `httpx.AsyncClient` (connection pooling, one base URL)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    @classmethod
    def at(
        cls,
        base_url: str,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Self:
        """A client of the history-service at `base_url` (nothing connects until a request)."""
        return cls(httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport))

    @property
    def base_url(self) -> str:
        """Where history-service is, for messages."""
        return str(self.http.base_url).rstrip("/")

    async def close(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def drawing_exists(self, digit_id: uuid.UUID) -> bool:
        """Whether a drawing is stored."""
        response = await self._request("GET", f"/api/digits/{digit_id}", allow=(404,))
        return response.status_code == 200

    async def models(self) -> ModelsOut:
        """Champion, ledger and the versions seen."""
        return ModelsOut.model_validate(await self._json("GET", "/api/models"))

    async def version_stats(
        self, version: int, against: int | None = None, flips: int | None = None
    ) -> VersionStats:
        """How `version` reads the stored drawings, against the champion before it or `against`,
        with the newest `flips` flips (the service's default page when None)."""
        params: dict[str, int] = {} if against is None else {"against": against}
        if flips is not None:
            params["flips_limit"] = flips
        return VersionStats.model_validate(
            await self._json("GET", f"/api/models/{version}", params=params)
        )

    async def job(self, job_id: uuid.UUID) -> RescoreJobOut | None:
        """One rescore or evaluation job, or None while history-service has no row for it."""
        response = await self._request("GET", f"/api/rescore-jobs/{job_id}", allow=(404,))
        if response.status_code == 404:
            return None
        return _parse(RescoreJobOut, response)

    async def jobs(self, *, active: bool = False) -> list[RescoreJobOut]:
        """Recent jobs, newest first (only unfinished ones with `active`)."""
        params = {"active": "true"} if active else None
        return _JOBS.validate_python(await self._json("GET", "/api/rescore-jobs", params=params))

    async def drift(self, last: int | None = None) -> DriftOut:
        """The drift report now (the short window LAST drawings, or history-service's own)."""
        params = {"last": last} if last is not None else {}
        return _parse(DriftOut, await self._request("GET", "/api/drift", params=params))

    async def rollouts(self, limit: int = 10) -> list[RolloutOut]:
        """The newest rollouts, newest first, with their verdicts."""
        found = await self._json("GET", "/api/rollouts", params={"limit": limit})
        return _ROLLOUTS.validate_python(found)

    async def rollout(self, rollout_id: uuid.UUID) -> RolloutOut | None:
        """One rollout with its verdict, or None if history-service has none of that id."""
        response = await self._request("GET", f"/api/rollouts/{rollout_id}", allow=(404,))
        if response.status_code == 404:
            return None
        return _parse(RolloutOut, response)

    async def stored_id_pages(
        self, page: int = ID_PAGE, *, until: datetime | None = None
    ) -> AsyncIterator[list[uuid.UUID]]:
        """Every stored drawing id (submitted at or before `until`), ascending, a page at a
        time: a plan over ten million drawings holds one page, not every id."""
        after: uuid.UUID | None = None
        while True:
            params: dict[str, str | int] = {"limit": page}
            if after is not None:
                params["after"] = str(after)
            if until is not None:
                params["until"] = until.isoformat()
            ids = _IDS.validate_python(
                await self._json("GET", "/internal/digit-ids", params=params)
            )
            if ids:
                yield ids
            if len(ids) < page:
                return
            after = ids[-1]

    async def stored_count(self, until: datetime | None = None) -> int:
        """How many ids `stored_id_pages` goes through."""
        params = {"until": until.isoformat()} if until is not None else {}
        found = _parse(
            StoredCount, await self._request("GET", "/internal/digit-ids/count", params=params)
        )
        return found.count

    async def model_inputs(self, digit_ids: list[uuid.UUID]) -> ModelInputsOut:
        """The 28×28 model inputs of the given drawings, in one request."""
        body = ModelInputsIn(digit_ids=digit_ids).model_dump(mode="json")
        return _parse(
            ModelInputsOut, await self._request("POST", "/internal/model-inputs", json=body)
        )

    async def labeled(self) -> list[LabeledOut]:
        """Every drawing a person labeled, with its label."""
        return _LABELED.validate_python(await self._json("GET", "/internal/labeled"))

    async def replay(self, token: str, since: datetime | None) -> ReplayOut:
        """Ask history-service to rewind its group and re-read the topics (admin token)."""
        response = await self._request(
            "POST",
            "/admin/replay",
            json=ReplayIn(since=since).model_dump(mode="json"),
            headers={"Authorization": f"Bearer {token}"},
        )
        return _parse(ReplayOut, response)

    async def erase(self, token: str, request: EraseIn) -> EraseOut:
        """Ask history-service to erase a drawing for good (admin token)."""
        response = await self._request(
            "POST",
            "/admin/erasures",
            json=request.model_dump(mode="json"),
            headers={"Authorization": f"Bearer {token}"},
        )
        return _parse(EraseOut, response)

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self._request(method, path, **kwargs)).json()

    async def _request(
        self, method: str, path: str, *, allow: tuple[int, ...] = (), **kwargs: Any
    ) -> httpx.Response:
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise HistoryUnavailableError(
                f"history-service at {self.base_url} is unreachable ({exc!r})"
            ) from exc
        if response.status_code >= 500:
            raise HistoryUnavailableError(
                f"history-service at {self.base_url} failed ({response.status_code}); "
                "try again shortly"
            )
        if response.status_code >= 400 and response.status_code not in allow:
            raise HistoryRefusedError(response.status_code, _detail(response))
        return response


def _parse(model: type[M], response: httpx.Response) -> M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise HistoryUnavailableError(
            f"history-service answered {response.request.url.path} with an unexpected body: {exc}"
        ) from exc


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return detail if isinstance(detail, str) else (response.text[:200] or response.reason_phrase)
