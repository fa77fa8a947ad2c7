"""The rest of the gateway's API: labels, probes, the history proxy and a complete OpenAPI."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.routing import APIRoute
from mnistream_common.events import DigitLabeled
from mnistream_common.topics import MODEL_PROMOTED

from tests.component.gateway.conftest import Gateway
from tests.helpers import drawing_png, promotion, tiny_onnx_model

# --- labels ---------------------------------------------------------------------------------


@pytest.mark.parametrize("label", [0, 5, 9])
async def test_a_label_for_a_stored_drawing_is_published(gateway: Gateway, label: int) -> None:
    digit_id = uuid.uuid4()
    gateway.history.known.add(digit_id)

    response = await gateway.client.post(f"/api/digits/{digit_id}/label", json={"label": label})

    assert response.status_code == 202, response.text
    assert response.json() == {"digit_id": str(digit_id), "label": label}
    [record] = gateway.labeled
    assert record.key == str(digit_id).encode()
    event = DigitLabeled.from_bytes(record.value)
    assert (event.digit_id, event.label) == (digit_id, label)


async def test_a_drawing_just_uploaded_here_can_be_labeled_before_history_has_it(
    gateway: Gateway,
) -> None:
    upload = await gateway.client.post(
        "/api/predictions", content=drawing_png(), headers={"content-type": "image/png"}
    )
    digit_id = upload.json()["digit_id"]

    response = await gateway.client.post(f"/api/digits/{digit_id}/label", json={"label": 3})

    assert response.status_code == 202
    assert DigitLabeled.from_bytes(gateway.labeled[0].value).label == 3


@pytest.mark.parametrize("body", [{"label": 10}, {"label": -1}, {}, {"label": "seven"}])
async def test_only_digits_0_to_9_are_labels(gateway: Gateway, body: dict[str, Any]) -> None:
    digit_id = uuid.uuid4()
    gateway.history.known.add(digit_id)

    response = await gateway.client.post(f"/api/digits/{digit_id}/label", json=body)

    assert response.status_code == 422
    assert gateway.labeled == []


async def test_labeling_an_unknown_drawing_is_404(gateway: Gateway) -> None:
    digit_id = uuid.uuid4()

    response = await gateway.client.post(f"/api/digits/{digit_id}/label", json={"label": 1})

    assert response.status_code == 404
    assert response.json()["detail"] == f"no drawing with id {digit_id}"
    assert gateway.labeled == []


async def test_labeling_a_malformed_id_is_422(gateway: Gateway) -> None:
    response = await gateway.client.post("/api/digits/not-a-uuid/label", json={"label": 1})

    assert response.status_code == 422


async def test_labeling_while_history_is_down_is_503(gateway: Gateway) -> None:
    gateway.history.down = True

    response = await gateway.client.post(f"/api/digits/{uuid.uuid4()}/label", json={"label": 1})

    assert response.status_code == 503
    assert "history service is unreachable" in response.json()["detail"]
    assert gateway.labeled == []


# --- history proxy --------------------------------------------------------------------------


async def test_history_reads_are_forwarded(gateway: Gateway) -> None:
    digit_id = uuid.uuid4()
    gateway.history.known.add(digit_id)

    found = await gateway.client.get(f"/api/digits/{digit_id}")
    missing = await gateway.client.get(f"/api/digits/{uuid.uuid4()}")
    models = await gateway.client.get("/api/models")

    assert (found.status_code, found.json()) == (200, {"digit_id": str(digit_id)})
    assert missing.status_code == 404
    assert models.json() == [{"version": 7}]


async def test_history_reads_while_history_is_down_are_503(gateway: Gateway) -> None:
    gateway.history.down = True

    response = await gateway.client.get("/api/models")

    assert response.status_code == 503
    assert "try again shortly" in response.json()["detail"]


# --- probes ---------------------------------------------------------------------------------


async def test_healthz(gateway: Gateway) -> None:
    response = await gateway.client.get("/healthz")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_says_why_until_a_model_is_promoted(gateway: Gateway) -> None:
    before = await gateway.client.get("/readyz")
    event = promotion(tiny_onnx_model(1), 3)
    await gateway.broker.publish(event.to_bytes(), MODEL_PROMOTED.name, key=b"mnist-digits")
    after = await gateway.client.get("/readyz")

    assert before.status_code == 503
    assert "no model has been promoted yet" in before.json()["reason"]
    assert after.status_code == 200
    assert after.json()["model"] == {"version": 3, "sha256": event.model.sha256}


async def test_an_invalid_promotion_is_ignored(gateway: Gateway) -> None:
    await gateway.broker.publish(b"{not json", MODEL_PROMOTED.name)

    response = await gateway.client.get("/readyz")

    assert response.status_code == 503


# --- OpenAPI --------------------------------------------------------------------------------


async def test_openapi_lists_every_route_with_its_errors(gateway: Gateway) -> None:
    response = await gateway.client.get("/openapi.json")

    spec = response.json()
    routes = {
        (route.path_format, method.lower())
        for route in gateway.app.routes
        if isinstance(route, APIRoute) and route.include_in_schema
        for method in route.methods or ()
    }
    documented = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert routes <= documented
    assert set(spec["paths"]) == {
        "/api/predictions",
        "/api/digits/{digit_id}/label",
        "/api/events",
        "/healthz",
        "/readyz",
        "/api/digits{rest}",
        "/api/models{rest}",
        "/api/rescore-jobs{rest}",
        "/api/rollouts{rest}",
        "/api/drift{rest}",
    }
    for path, method in [
        ("/api/predictions", "post"),
        ("/api/digits/{digit_id}/label", "post"),
        ("/api/events", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ]:
        operation = spec["paths"][path][method]
        assert operation.get("summary"), f"{method} {path} has no summary"


async def test_openapi_documents_the_upload_body_and_answers(gateway: Gateway) -> None:
    spec = (await gateway.client.get("/openapi.json")).json()

    upload = spec["paths"]["/api/predictions"]["post"]

    content = upload["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "image/png", "image/jpeg"}
    assert content["multipart/form-data"]["schema"]["required"] == ["image"]
    assert content["multipart/form-data"]["schema"]["properties"]["image"]["format"] == "binary"
    assert {"200", "202", "400", "413", "415", "422", "429", "503"} <= set(upload["responses"])
    wait = next(p for p in upload["parameters"] if p["name"] == "wait")
    assert (wait["schema"]["minimum"], wait["schema"]["maximum"]) == (0, 60_000)
    assert "MAX_WAIT_MS" in wait["description"]
    label = spec["paths"]["/api/digits/{digit_id}/label"]["post"]
    assert "requestBody" in label
    assert "404" in label["responses"]


@pytest.mark.parametrize("path", ["/metrics", "/metrics/"])
async def test_the_metrics_are_served_at_the_path_prometheus_scrapes(
    gateway: Gateway, path: str
) -> None:
    """`/` serves the web client, which used to answer `/metrics` with a 404."""
    response = await gateway.client.get(path, follow_redirects=False)

    assert response.status_code == 200, response.text[:200]
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE mnistream_uploads_total counter" in response.text
