"""Uploading a drawing through the gateway: accepted drawings reach Kafka exactly once, keyed by
their time-ordered id; `?wait=` answers with the prediction; every bad upload gets its 4xx."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from mnistream_common import tracing
from mnistream_common.events import DigitSubmitted
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tests.component.gateway.conftest import Gateway, gateway_settings, running_gateway
from tests.helpers import (
    animated_png,
    blank_png,
    drawing_png,
    encode_ink,
    png_header,
    stroke_ink,
)

PNG = drawing_png()
LIMIT = 512 * 1024


def multipart(data: bytes, content_type: str = "image/png", field: str = "image") -> Any:
    return {field: ("drawing.png", data, content_type)}


async def upload_raw(
    gateway: Gateway, data: bytes, content_type: str = "image/png", query: str = ""
) -> httpx.Response:
    return await gateway.client.post(
        f"/api/predictions{query}", content=data, headers={"content-type": content_type}
    )


def assert_accepted_and_published(gateway: Gateway, response: httpx.Response) -> DigitSubmitted:
    """202, a UUIDv7 id, and exactly one `digits.submitted` record with that key and payload."""
    assert response.status_code == 202, response.text
    body = response.json()
    digit_id = uuid.UUID(body["digit_id"])
    assert digit_id.version == 7
    assert body["status"] == "accepted"
    assert body["result_url"] == f"/api/digits/{digit_id}"
    assert body["events_url"] == "/api/events"
    assert body["prediction"] is None
    [record] = gateway.submitted
    assert record.key == str(digit_id).encode()
    event = DigitSubmitted.from_bytes(record.value)
    assert event.digit_id == digit_id
    return event


async def test_a_multipart_upload_is_accepted_and_published_once(gateway: Gateway) -> None:
    response = await gateway.client.post(
        "/api/predictions",
        files=multipart(PNG),
        headers={"user-agent": "pytest-browser", "x-mnistream-source": "web"},
    )

    event = assert_accepted_and_published(gateway, response)
    assert event.image == PNG
    assert (event.media_type, event.width, event.height) == ("image/png", 280, 280)
    assert event.client.source == "web"
    assert event.client.user_agent == "pytest-browser"
    assert event.submitted_at.tzinfo is not None


@pytest.mark.parametrize("kind", ["png", "jpeg"])
async def test_a_raw_image_body_is_accepted_and_published_once(gateway: Gateway, kind: str) -> None:
    data = PNG if kind == "png" else encode_ink(stroke_ink(size=200), "jpeg")

    response = await upload_raw(gateway, data, f"image/{kind}")

    event = assert_accepted_and_published(gateway, response)
    assert event.image == data
    assert event.media_type == f"image/{kind}"
    assert event.client.source == "api"


async def test_the_real_type_wins_over_a_wrong_declared_one(gateway: Gateway) -> None:
    response = await gateway.client.post(
        "/api/predictions", files=multipart(PNG, content_type="image/jpeg")
    )

    assert assert_accepted_and_published(gateway, response).media_type == "image/png"


async def test_ids_are_time_ordered(gateway: Gateway) -> None:
    ids = []
    for _ in range(5):
        response = await upload_raw(gateway, PNG)
        ids.append(uuid.UUID(response.json()["digit_id"]))

    assert ids == sorted(ids)
    assert len(set(ids)) == 5
    assert [r.key for r in gateway.submitted] == [str(i).encode() for i in ids]


async def test_wait_answers_200_with_the_prediction_when_it_arrives(gateway: Gateway) -> None:
    gateway.worker.answering = True
    gateway.worker.digit = 4

    response = await upload_raw(gateway, PNG, query="?wait=5000")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "predicted"
    prediction = body["prediction"]
    assert prediction["digit_id"] == body["digit_id"]
    assert prediction["predicted_digit"] == 4
    assert prediction["kind"] == "live"
    assert prediction["model"]["version"] == 7
    assert len(prediction["probabilities"]) == 10
    assert prediction["latency_ms"] >= 0
    assert len(gateway.submitted) == 1


async def test_a_shadow_reading_is_never_the_answer(gateway: Gateway) -> None:
    gateway.worker.answering = True
    gateway.worker.digit, gateway.worker.shadow_digit = 4, 9

    response = await upload_raw(gateway, PNG, query="?wait=5000")

    prediction = response.json()["prediction"]
    assert (prediction["kind"], prediction["predicted_digit"], prediction["model"]["version"]) == (
        "live",
        4,
        7,
    )


async def test_the_event_stream_carries_the_champions_answer_and_no_shadow_reading(
    gateway: Gateway,
) -> None:
    gateway.worker.answering = True
    gateway.worker.digit, gateway.worker.shadow_digit = 4, 9
    stream = gateway.app.state.gateway.hub.subscribe()
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)  # subscribed before the upload

    response = await upload_raw(gateway, PNG, query="?wait=5000")
    event = await asyncio.wait_for(first, 5)
    second = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.2)

    assert response.status_code == 200, response.text
    assert event.name == "prediction"
    assert (event.data["kind"], event.data["predicted_digit"]) == ("live", 4)
    assert not second.done(), "a second prediction event (the shadow reading) was streamed"
    second.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await second
    await stream.aclose()


async def test_wait_answers_202_when_no_prediction_arrives_in_time(gateway: Gateway) -> None:
    response = await upload_raw(gateway, PNG, query="?wait=50")

    assert_accepted_and_published(gateway, response)


async def test_a_prediction_for_another_drawing_does_not_answer_the_wait(
    gateway: Gateway,
) -> None:
    gateway.worker.answering = True
    gateway.worker.misaddressed = True
    started = asyncio.get_running_loop().time()

    response = await upload_raw(gateway, PNG, query="?wait=1000")

    assert_accepted_and_published(gateway, response)
    # The wrong reply reached the gateway while the upload still waited, and was not taken.
    [replied] = gateway.worker.replied_at
    assert replied - started < 1.0


@pytest.mark.parametrize("wait", ["-1", "5001", "soon"])
async def test_wait_is_bounded(gateway: Gateway, wait: str) -> None:
    response = await upload_raw(gateway, PNG, query=f"?wait={wait}")

    assert response.status_code == 422
    assert gateway.submitted == []


async def test_wait_is_bounded_by_the_setting() -> None:
    async with running_gateway(max_wait_ms=1000) as gateway:
        refused = await upload_raw(gateway, PNG, query="?wait=1001")
        allowed = await upload_raw(gateway, PNG, query="?wait=1000")

    assert refused.status_code == 422
    assert "at most 1000 ms" in refused.json()["detail"]
    assert allowed.status_code in (200, 202)
    assert len(gateway.submitted) == 1


# --- refusals -------------------------------------------------------------------------------


async def _too_big_stream(chunks: list[int], size: int = 64 * 1024) -> AsyncIterator[bytes]:
    yield PNG
    for _ in range(40):  # 2.5 MB in all, far over the limit
        chunks.append(size)
        yield b"\x00" * size


BAD_RAW_UPLOADS = [
    ("empty", b"", "image/png", 400, "the upload is empty (0 bytes)"),
    ("not-an-image", b"hello, world", "image/png", 415, "not a PNG or JPEG image"),
    (
        "gif-declared-as-png",
        b"GIF89a" + b"\x00" * 64,
        "image/png",
        415,
        "accepted types: image/png, image/jpeg",
    ),
    (
        "unsupported-content-type",
        PNG,
        "image/gif",
        415,
        "unsupported Content-Type 'image/gif'; send multipart/form-data with an `image` field",
    ),
    ("no-content-type", PNG, "", 415, "unsupported Content-Type '(none)'"),
    (
        "oversize",
        b"\x89PNG" + b"\x00" * LIMIT,
        "image/png",
        413,
        "the upload is 513 KB; the limit is 512 KB",
    ),
    ("20000px", png_header(20_000, 20_000), "image/png", 413, "the image has too many pixels"),
    ("4096px", png_header(4096, 16), "image/png", 413, "4096×16; the limit is 2048 px per side"),
    ("blank", blank_png(), "image/png", 400, "the drawing is blank: no ink was found"),
    ("truncated", PNG[: len(PNG) // 2], "image/png", 400, "corrupt or truncated"),
    ("animated", animated_png(), "image/png", 400, "animated images are not accepted"),
]


@pytest.mark.parametrize(
    ("data", "content_type", "status", "message"),
    [case[1:] for case in BAD_RAW_UPLOADS],
    ids=[case[0] for case in BAD_RAW_UPLOADS],
)
async def test_every_bad_raw_upload_gets_its_status_and_message(
    gateway: Gateway, data: bytes, content_type: str, status: int, message: str
) -> None:
    response = await upload_raw(gateway, data, content_type)

    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert gateway.submitted == []


BAD_MULTIPART_UPLOADS = [
    ("empty", multipart(b""), 400, "the upload is empty (0 bytes)"),
    ("not-an-image", multipart(b"%PDF-1.7", "application/pdf"), 415, "(declared application/pdf)"),
    (
        "oversize",
        multipart(b"\x89PNG" + b"\x00" * LIMIT),
        413,
        "the upload is 513 KB; the limit is 512 KB",
    ),
    ("blank", multipart(blank_png()), 400, "the drawing is blank"),
    ("truncated", multipart(PNG[:300]), 400, "corrupt or truncated"),
    ("animated", multipart(animated_png()), 400, "animated images are not accepted"),
    ("20000px", multipart(png_header(20_000, 20_000)), 413, "too many pixels"),
    (
        "no-image-field",
        multipart(PNG, field="file"),
        422,
        "the multipart body has no file field named `image`; send the drawing as `image`",
    ),
]


@pytest.mark.parametrize(
    ("files", "status", "message"),
    [case[1:] for case in BAD_MULTIPART_UPLOADS],
    ids=[case[0] for case in BAD_MULTIPART_UPLOADS],
)
async def test_every_bad_multipart_upload_gets_its_status_and_message(
    gateway: Gateway, files: Any, status: int, message: str
) -> None:
    response = await gateway.client.post("/api/predictions", files=files)

    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert gateway.submitted == []


async def test_a_multipart_body_with_only_text_fields_is_refused(gateway: Gateway) -> None:
    text_field: Any = {"image": (None, b"a drawing")}

    response = await gateway.client.post("/api/predictions", files=text_field)

    assert response.status_code == 422
    assert "no file field named `image`" in response.json()["detail"]


async def test_an_oversize_body_without_content_length_is_refused_while_reading(
    gateway: Gateway,
) -> None:
    sent: list[int] = []

    response = await gateway.client.post(
        "/api/predictions",
        content=_too_big_stream(sent),
        headers={"content-type": "image/png"},
    )

    assert response.status_code == 413, response.text
    assert "more than 512 KB; the limit is 512 KB" in response.json()["detail"]
    assert sum(sent) < 40 * 64 * 1024, "the gateway read the whole body before refusing"
    assert gateway.submitted == []


async def test_an_oversize_multipart_body_without_content_length_is_refused(
    gateway: Gateway,
) -> None:
    boundary = "mnistream-boundary"
    sent: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        yield (
            f"--{boundary}\r\nContent-Disposition: form-data; name=image; filename=a.png\r\n"
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        async for chunk in _too_big_stream(sent):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    response = await gateway.client.post(
        "/api/predictions",
        content=body(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )

    assert response.status_code == 413, response.text
    assert "more than 512 KB" in response.json()["detail"]
    assert gateway.submitted == []


async def test_too_many_uploads_get_429_with_retry_after() -> None:
    async with running_gateway(rate_limit_per_minute=3) as gateway:
        accepted = [(await upload_raw(gateway, PNG)).status_code for _ in range(3)]

        refused = await upload_raw(gateway, PNG)

        assert accepted == [202, 202, 202]
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert (
            "too many uploads from 127.0.0.1: the limit is 3 per minute"
            in (refused.json()["detail"])
        )
        assert len(gateway.submitted) == 3


async def test_with_tracing_on_an_upload_answers_with_its_trace_and_hands_it_to_kafka() -> None:
    """The upload's span is the root of the drawing's trace: its id comes back (with a link
    where a trace UI runs) and travels in the record's traceparent header."""
    exporter = InMemorySpanExporter()
    tracing.configure_tracing("gateway", "", exporter=exporter)
    try:
        # Other braces in the link (a Grafana Explore URL's JSON) are the link's own.
        link = 'http://grafana.test/explore?left={"query":"{trace_id}"}'
        async with running_gateway(trace_url=link) as gateway:
            gateway.worker.answering = True
            response = await upload_raw(gateway, PNG, query="?wait=2000")
    finally:
        tracing.shutdown_tracing()
    assert response.status_code == 200, response.text
    body = response.json()
    (upload,) = [s for s in exporter.get_finished_spans() if s.name == "POST /api/predictions"]
    trace_id = format(upload.context.trace_id, "032x")
    assert body["trace_id"] == trace_id
    assert body["trace_url"] == link.replace("{trace_id}", trace_id)
    assert trace_id in body["trace_url"]
    assert upload.attributes is not None
    assert upload.attributes["mnistream.digit_id"] == body["digit_id"]
    assert upload.attributes["mnistream.status"] == "predicted"
    [record] = gateway.submitted
    assert record.headers["traceparent"].decode().split("-")[1] == trace_id


async def test_with_tracing_off_an_upload_has_no_trace(gateway: Gateway) -> None:
    response = await upload_raw(gateway, PNG)
    body = response.json()
    assert body["trace_id"] is None and body["trace_url"] is None
    [record] = gateway.submitted
    assert "traceparent" not in record.headers


async def test_a_refused_upload_is_not_a_failed_span() -> None:
    """A 415 is the client's mistake: the upload's span says so and is not marked failed."""
    exporter = InMemorySpanExporter()
    tracing.configure_tracing("gateway", "", exporter=exporter)
    try:
        async with running_gateway() as gateway:
            response = await upload_raw(gateway, b"GIF89a not a png", "image/gif")
    finally:
        tracing.shutdown_tracing()
    assert response.status_code == 415
    (upload,) = [s for s in exporter.get_finished_spans() if s.name == "POST /api/predictions"]
    assert upload.attributes is not None
    assert upload.attributes["http.response.status_code"] == 415
    assert upload.status.status_code is not StatusCode.ERROR


def test_a_trace_url_without_the_trace_id_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="TRACE_URL must contain"):
        gateway_settings(trace_url="http://jaeger.test/search")
    assert gateway_settings(trace_url="http://g/explore?x={a}&t={trace_id}").trace_url
