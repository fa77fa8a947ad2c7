"""Hostile uploads: each gets a 4xx that says what was wrong (never a 5xx), and the gateway
keeps serving everyone else: a normal upload succeeds right after each one.

Odd but valid drawings (16-bit, palette, CMYK, a PNG declared as JPEG) are accepted; the
same formats without ink are refused as blank.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from mnistream_common.kafka import client_options
from mnistream_common.topics import DIGITS_SUBMITTED, Groups

from tests import helpers
from tests.e2e.support import Predictions, upload_all, upload_predicted
from tests.helpers import animated_png, drawing_png, encode_ink, stroke_ink
from tests.polling import eventually
from tests.reliability.hostile import (
    animated_gif,
    blank_cmyk_jpeg,
    blank_palette_png,
    blank_png16,
    decompression_bomb,
    huge_dimensions,
    raw_post,
)
from tests.stack import require_kafka
from tests.system import System

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]


@dataclass(frozen=True)
class Hostile:
    """An upload (made when the test runs: the bomb takes seconds) and the answer it must get."""

    name: str
    make: Callable[[], bytes]
    declared: str
    status: int
    message: str


def _truncated_png() -> bytes:
    png = drawing_png()
    return png[: len(png) // 3]


def corpus() -> list[Hostile]:
    """Every hostile upload tried (sent as multipart and as a raw body)."""
    return [
        Hostile("truncated PNG", _truncated_png, "image/png", 400, "truncated"),
        Hostile("0 bytes", bytes, "image/png", 400, "empty (0 bytes)"),
        Hostile("text declared as PNG", lambda: b"hello\n" * 40, "image/png", 415, "not a PNG"),
        Hostile("decompression bomb", decompression_bomb, "image/png", 413, "too many pixels"),
        Hostile("20,000 px side", huge_dimensions, "image/png", 413, "limit is 2048 px"),
        Hostile("blank 16-bit PNG", blank_png16, "image/png", 400, "blank"),
        Hostile("blank palette PNG", blank_palette_png, "image/png", 400, "blank"),
        Hostile("animated PNG", animated_png, "image/png", 400, "animated images"),
        Hostile("animated GIF", animated_gif, "image/png", 415, "not a PNG or JPEG"),
        Hostile("blank CMYK JPEG", blank_cmyk_jpeg, "image/jpeg", 400, "blank"),
    ]


CORPUS = corpus()


async def still_serving(system: System, drawing: bytes) -> None:
    """A normal upload right after: accepted and predicted."""
    await upload_predicted(system.gateway_url, drawing)


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
async def test_hostile_upload_gets_a_clear_4xx(
    system: System, drawings: list[bytes], case: Hostile
) -> None:
    body = case.make()
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
        multipart = await client.post(
            "/api/predictions", files={"image": ("x.png", body, case.declared)}
        )
        raw = await client.post(
            "/api/predictions", content=body, headers={"content-type": case.declared}
        )
    for answer in (multipart, raw):
        assert answer.status_code == case.status, (case.name, answer.status_code, answer.text)
        assert case.message.lower() in answer.json()["detail"].lower(), answer.text
    await still_serving(system, drawings[0])


ODD_BUT_VALID = [
    ("16-bit PNG", encode_ink(stroke_ink(), "png16"), "image/png", "image/png"),
    ("palette PNG", encode_ink(stroke_ink(), "palette"), "image/png", "image/png"),
    ("CMYK JPEG", encode_ink(stroke_ink(), "cmyk-jpeg"), "image/jpeg", "image/jpeg"),
    ("PNG declared as JPEG", drawing_png(), "image/jpeg", "image/png"),
]


@pytest.mark.parametrize(
    ("name", "body", "declared", "real"), ODD_BUT_VALID, ids=[v[0] for v in ODD_BUT_VALID]
)
async def test_odd_but_valid_drawings_are_read_by_their_real_type(
    system: System, name: str, body: bytes, declared: str, real: str
) -> None:
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
        answer = await client.post(
            "/api/predictions",
            params={"wait": 5000},
            content=body,
            headers={"content-type": declared},
        )
        assert answer.status_code == 200, answer.text  # predicted within the wait
        digit_id = answer.json()["digit_id"]

        async def stored() -> httpx.Response:
            return await client.get(f"/api/digits/{digit_id}")

        for _ in range(100):
            row = await stored()
            if row.status_code == 200:
                break
            await asyncio.sleep(0.3)
    assert row.status_code == 200, row.text
    assert row.json()["media_type"] == real, "the real type, not the declared one, is kept"


async def test_a_declared_type_that_is_not_an_image_is_refused(system: System) -> None:
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
        answer = await client.post(
            "/api/predictions", content=drawing_png(), headers={"content-type": "text/plain"}
        )
    assert answer.status_code == 415
    assert "multipart/form-data" in answer.json()["detail"]


def _multipart(*parts: tuple[str, bytes, str | None]) -> tuple[bytes, str]:
    boundary = "reliability-boundary"
    body = b""
    for name, data, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


MULTIPART_ABUSE = [
    (
        "a 2 MB text field",
        [("image", drawing_png(), "x.png"), ("note", b"x" * 2_000_000, None)],
        413,
        "limit is 512 KB",
    ),
    (
        "eleven fields",
        [("image", drawing_png(), "x.png"), *((f"f{i}", b"1", None) for i in range(11))],
        400,
        "too many fields",
    ),
    ("no image field", [("picture", drawing_png(), "x.png")], 422, "named `image`"),
    ("image as a text field", [("image", b"not a file", None)], 422, "named `image`"),
]


@pytest.mark.parametrize(
    ("name", "parts", "status", "message"), MULTIPART_ABUSE, ids=[m[0] for m in MULTIPART_ABUSE]
)
async def test_multipart_abuse_gets_a_clear_4xx(
    system: System,
    drawings: list[bytes],
    name: str,
    parts: list[tuple[str, bytes, str | None]],
    status: int,
    message: str,
) -> None:
    body, content_type = _multipart(*parts)
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
        answer = await client.post(
            "/api/predictions", content=body, headers={"content-type": content_type}
        )
    assert answer.status_code == status, answer.text
    assert message.lower() in answer.json()["detail"].lower(), answer.text
    await still_serving(system, drawings[0])


async def test_a_slow_body_gets_408_while_others_are_served(
    system: System, drawings: list[bytes]
) -> None:
    port = int(system.gateway_url.rsplit(":", 1)[1])
    body = drawing_png()
    slow = asyncio.create_task(
        raw_post(
            port,
            {"Content-Type": "image/png", "Content-Length": str(len(body))},
            body,
            byte_every_s=0.5,
        )
    )
    served = 0
    while not slow.done():  # everyone else is served while the slow client dribbles
        await still_serving(system, drawings[served % len(drawings)])
        served += 1
        await asyncio.sleep(0.5)
    answer = await slow
    assert answer.status == 408, answer
    assert b"longer than" in answer.body, answer.body
    assert served >= 5, "other clients were served meanwhile"


async def test_a_burst_of_huge_drawings_stalls_no_worker(
    system: System, drawings: list[bytes], predictions: Predictions
) -> None:
    """64 compressible 2048 x 2048 drawings as version 1 records (no model input: the workers
    decode them, as for any producer but the gateway), with normal uploads beside them: the
    decoding runs off the event loop, so no worker misses its heartbeats and is dropped from the
    group (its member id would change), and everything is predicted."""
    huge = encode_ink(stroke_ink(size=2048, width=60), "rgba-dark")
    burst = [helpers.submitted(huge, schema_version=1) for _ in range(64)]
    members = await _inference_members()
    producer = AIOKafkaProducer(**client_options(require_kafka()), acks="all")
    await producer.start()
    try:
        for event in burst:
            key = str(event.digit_id).encode()
            await producer.send(DIGITS_SUBMITTED.name, event.to_bytes(), key=key)
        await producer.flush()
    finally:
        await producer.stop()
    normal = await upload_all(system.gateway_url, drawings[:20])
    everything = normal + [event.digit_id for event in burst]

    await eventually(
        lambda: not predictions.missing(everything), 180, "the burst and the uploads predicted"
    )
    assert await _inference_members() == members


async def _inference_members() -> set[str]:
    admin = AIOKafkaAdminClient(**client_options(require_kafka()))
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([Groups.INFERENCE])
        return {m["member_id"] for m in response.to_object()["groups"][0]["members"]}
    finally:
        await admin.close()
