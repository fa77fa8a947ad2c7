"""history-service's admin API: a replay only with the right bearer token, never when it is off."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from history_service.admin import (
    ErasureUnavailableError,
    NotStoredError,
    ReplayRefusedError,
    admin_router,
)
from mnistream_common.history_api import EraseIn, EraseOut


class FakeReplayer:
    """Records the replays asked for."""

    def __init__(self, refuse: bool = False) -> None:
        self.calls: list[datetime | None] = []
        self.refuse = refuse

    async def replay(self, since: datetime | None) -> dict[str, int]:
        if self.refuse:
            raise ReplayRefusedError("another history-service instance is consuming")
        self.calls.append(since)
        return {"digits.submitted": 3, "digits.predicted": 4}


def app_with(token: str, replayer: FakeReplayer) -> FastAPI:
    app = FastAPI()
    app.include_router(admin_router)
    app.state.admin_token = token
    app.state.replayer = replayer
    return app


@pytest.fixture
def replayer() -> FakeReplayer:
    return FakeReplayer()


@pytest.fixture
async def client(replayer: FakeReplayer) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app_with("s3cret-admin-token", replayer))
    async with httpx.AsyncClient(transport=transport, base_url="http://history") as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_right_token_replays_from_the_beginning(
    client: httpx.AsyncClient, replayer: FakeReplayer
) -> None:
    response = await client.post("/admin/replay", json={}, headers=bearer("s3cret-admin-token"))

    assert response.status_code == 200
    assert response.json() == {
        "records": {"digits.submitted": 3, "digits.predicted": 4},
        "total": 7,
    }
    assert replayer.calls == [None]


async def test_since_is_passed_on(client: httpx.AsyncClient, replayer: FakeReplayer) -> None:
    since = datetime(2026, 11, 1, 12, tzinfo=UTC)
    response = await client.post(
        "/admin/replay", json={"since": since.isoformat()}, headers=bearer("s3cret-admin-token")
    )

    assert response.status_code == 200
    assert replayer.calls == [since]


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("wrong"), bearer(""), {"Authorization": "Basic czNjcmV0LWFkbWluLXRva2Vu"}],
    ids=["none", "wrong", "empty", "basic"],
)
async def test_no_or_a_wrong_token_is_401_and_nothing_replays(
    client: httpx.AsyncClient, replayer: FakeReplayer, headers: dict[str, str]
) -> None:
    response = await client.post("/admin/replay", json={}, headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "admin token is required" in response.json()["detail"]
    assert replayer.calls == []


async def test_with_no_token_configured_the_admin_api_is_off() -> None:
    replayer = FakeReplayer()
    transport = httpx.ASGITransport(app=app_with("", replayer))
    async with httpx.AsyncClient(transport=transport, base_url="http://history") as client:
        response = await client.post("/admin/replay", json={}, headers=bearer(""))

    assert response.status_code == 403
    assert "ADMIN_TOKEN" in response.json()["detail"]
    assert replayer.calls == []


async def test_a_naive_time_is_refused(client: httpx.AsyncClient, replayer: FakeReplayer) -> None:
    response = await client.post(
        "/admin/replay", json={"since": "2026-11-01T12:00:00"}, headers=bearer("s3cret-admin-token")
    )

    assert response.status_code == 422
    assert replayer.calls == []


async def test_a_group_still_in_use_is_409_with_the_reason() -> None:
    transport = httpx.ASGITransport(app=app_with("tok", FakeReplayer(refuse=True)))
    async with httpx.AsyncClient(transport=transport, base_url="http://history") as client:
        response = await client.post("/admin/replay", json={}, headers=bearer("tok"))

    assert response.status_code == 409
    assert "another history-service instance" in response.json()["detail"]


async def test_a_huge_replay_body_is_refused_before_the_token_is_even_looked_at() -> None:
    from history_service.app import create_app
    from history_service.settings import Settings

    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        while sent < 300 * 1024 * 1024:
            sent += 64 * 1024
            yield b" " * (64 * 1024)

    app = create_app(Settings(_env_file=None, log_json=False, log_level="WARNING"))
    transport = httpx.ASGITransport(app=app)  # no lifespan: the cap answers before any route
    async with httpx.AsyncClient(transport=transport, base_url="http://history") as client:
        response = await client.post(
            "/admin/replay", content=body(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert sent <= 2 * 64 * 1024


class FakeEraser:
    """Answers as the real one does for each outcome, by the id asked for."""

    def __init__(self) -> None:
        self.asked: list[EraseIn] = []

    async def erase(self, request: EraseIn) -> EraseOut:
        self.asked.append(request)
        if request.reason == "not stored":
            raise NotStoredError(f"no drawing {request.digit_id} is stored")
        if request.reason == "kafka down":
            raise ErasureUnavailableError("Kafka did not take the erasure; nothing was erased")
        applied = request.reason != "behind"
        return EraseOut(
            digit_id=request.digit_id,
            erased_at=datetime(2026, 3, 1, tzinfo=UTC),
            applied=applied,
            already_erased=False,
        )


@pytest.mark.parametrize(
    ("reason", "status"),
    [("request 42", 200), ("behind", 202), ("not stored", 404), ("kafka down", 503)],
)
async def test_an_erasure_answers_what_became_of_it(reason: str, status: int) -> None:
    eraser = FakeEraser()
    app = app_with("s3cret-admin-token", FakeReplayer())
    app.state.eraser = eraser
    body = {"digit_id": str(uuid.uuid4()), "requested_by": "ada@ops", "reason": reason}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://history"
    ) as client:
        response = await client.post(
            "/admin/erasures", json=body, headers=bearer("s3cret-admin-token")
        )
        untokened = await client.post("/admin/erasures", json=body)

    assert response.status_code == status, response.text
    assert untokened.status_code == 401
    assert len(eraser.asked) == 1  # the request without the token reached nothing
    if status >= 400:
        assert "erase" in response.json()["detail"] or "stored" in response.json()["detail"]
