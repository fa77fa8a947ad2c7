"""Labels feed the promotion gate: only JSON, only from the gateway's own pages (or allowed
origins), at a limited rate, with who gave them; and no route reads a body bigger than it needs."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator

import pytest
from mnistream_common.events import DigitLabeled, DigitSubmitted
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from tests.component.gateway.conftest import Gateway, running_gateway
from tests.helpers import drawing_png

HOST = "gateway.test"  # the client's base URL: the Host the gateway is reached at


def _stored(gateway: Gateway) -> uuid.UUID:
    digit_id = uuid.uuid4()
    gateway.history.known.add(digit_id)
    return digit_id


async def _label(
    gateway: Gateway, digit_id: uuid.UUID, headers: dict[str, str], body: bytes = b'{"label": 3}'
) -> int:
    response = await gateway.client.post(
        f"/api/digits/{digit_id}/label", content=body, headers=headers
    )
    return response.status_code


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 415),  # a cross-site fetch with a bare string body sends no JSON type
        ({"content-type": "text/plain"}, 415),
        ({"content-type": "application/x-www-form-urlencoded"}, 415),
        ({"content-type": "application/json", "origin": "https://evil.example"}, 403),
        ({"content-type": "text/plain", "origin": "http://gateway.test.evil.example"}, 403),
        ({"content-type": "application/json", "origin": f"http://{HOST}"}, 202),
        ({"content-type": "application/json; charset=utf-8"}, 202),
    ],
)
async def test_only_same_site_json_labels_are_taken(
    gateway: Gateway, headers: dict[str, str], status: int
) -> None:
    assert await _label(gateway, _stored(gateway), headers) == status
    assert len(gateway.labeled) == (1 if status == 202 else 0)


async def test_an_allowed_origin_may_label() -> None:
    async with running_gateway(allowed_origins="https://labels.example/, http://x.test") as gw:
        headers = {"content-type": "application/json", "origin": "https://labels.example"}
        assert await _label(gw, _stored(gw), headers) == 202


async def test_labels_have_a_rate_limit_of_their_own() -> None:
    async with running_gateway(label_rate_limit_per_minute=2) as gw:
        digit_id = _stored(gw)
        headers = {"content-type": "application/json"}
        answers = [await _label(gw, digit_id, headers) for _ in range(3)]
        assert answers == [202, 202, 429]
        assert len(gw.labeled) == 2
        upload = await gw.client.post(
            "/api/predictions", content=drawing_png(), headers={"content-type": "image/png"}
        )
        assert upload.status_code == 202  # uploads are counted apart


async def test_the_label_records_who_gave_it(gateway: Gateway) -> None:
    headers = {"content-type": "application/json", "user-agent": "labeller/1.0"}
    assert await _label(gateway, _stored(gateway), headers) == 202
    client = DigitLabeled.from_bytes(gateway.labeled[0].value).client
    assert client is not None
    assert (client.user_agent, client.remote_addr) == ("labeller/1.0", "127.0.0.1")


async def test_no_client_address_is_kept_when_told_not_to() -> None:
    async with running_gateway(record_client_address=False) as gw:
        upload = await gw.client.post(
            "/api/predictions", content=drawing_png(), headers={"content-type": "image/png"}
        )
        digit_id = uuid.UUID(upload.json()["digit_id"])
        assert await _label(gw, digit_id, {"content-type": "application/json"}) == 202
        [submitted] = gw.submitted_events
        assert submitted.client.remote_addr is None
        labeled = DigitLabeled.from_bytes(gw.labeled[0].value)
        assert labeled.client is not None and labeled.client.remote_addr is None


class Body:
    """A chunked body of `total` bytes that counts how much of it was taken."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total, self.chunk, self.sent = total, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            self.sent += self.chunk
            yield b"{" + b" " * (self.chunk - 1)


async def test_a_huge_chunked_label_body_is_refused_after_a_few_kb(gateway: Gateway) -> None:
    body = Body(300 * 1024 * 1024)
    response = await gateway.client.post(
        f"/api/digits/{_stored(gateway)}/label",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert "4,096 bytes at most" in response.json()["detail"]
    assert body.sent <= 2 * body.chunk
    assert gateway.labeled == []


async def test_a_declared_huge_body_is_refused_before_reading(gateway: Gateway) -> None:
    response = await gateway.client.post(
        f"/api/digits/{_stored(gateway)}/label",
        content=b'{"label": 3}',
        headers={"content-type": "application/json", "content-length": str(200 * 1024**2)},
    )
    assert response.status_code == 413


async def test_uploads_keep_their_own_larger_limit(gateway: Gateway) -> None:
    image, info, padded = Image.open(io.BytesIO(drawing_png())), PngInfo(), io.BytesIO()
    info.add_text("comment", "x" * 20_000)  # a valid drawing five times the JSON limit
    image.save(padded, "PNG", pnginfo=info)
    png = padded.getvalue()
    assert len(png) > 5 * 4096
    response = await gateway.client.post(
        "/api/predictions", content=png, headers={"content-type": "image/png"}
    )
    assert response.status_code == 202, response.text
    assert isinstance(gateway.submitted_events[0], DigitSubmitted)
