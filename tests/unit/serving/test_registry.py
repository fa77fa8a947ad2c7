"""A promotion is loaded only if the MLflow registry holds its version with the event's ONNX
URI and sha256 (MLflow's REST answers served by a fake; the real registry is asked in the
chaos suite's forged-promotion test)."""

from __future__ import annotations

import httpx
import pytest
from mnistream_serving.loader import ModelUnavailableError, fetch_and_build
from mnistream_serving.model import ModelRejectedError, RuntimeOptions
from mnistream_serving.registry import RegistryCheck

from tests.helpers import FakeObjectStore, FakeRegistry, promotion, tiny_onnx_model

OPTIONS = RuntimeOptions(intra_op_threads=1, prefer_gpu=False, warmup_batch=1)
ONNX = tiny_onnx_model(1)


def check(registry: FakeRegistry) -> RegistryCheck:
    return RegistryCheck("http://mlflow.test", registry.transport())


async def test_a_registered_promotion_passes() -> None:
    registry = FakeRegistry()
    registry.add(ONNX, 3)
    event = promotion(ONNX, 3)
    await check(registry).verify(event.model, event.onnx_uri)
    assert registry.asked == [("mnist-digits", 3)]


@pytest.mark.parametrize(
    ("registered", "uri", "reason"),
    [
        (None, None, "is not in the model registry"),
        (tiny_onnx_model(2), None, "was registered with sha256"),
        (ONNX, "s3://mlflow/elsewhere.onnx", "was registered at s3://mlflow/models/v3.onnx"),
    ],
    ids=["unregistered", "another-sha256", "another-uri"],
)
async def test_a_promotion_the_registry_does_not_vouch_for_is_refused(
    registered: bytes | None, uri: str | None, reason: str
) -> None:
    registry = FakeRegistry()
    if registered is not None:
        registry.add(registered, 3)
    event = promotion(ONNX, 3)
    with pytest.raises(ModelRejectedError, match=reason):
        await check(registry).verify(event.model, uri or event.onnx_uri)


async def test_a_registry_that_cannot_answer_is_an_outage_not_a_refusal() -> None:
    """Down (503) or unreachable: the load is tried again later, the promotion is not
    refused for good."""
    registry = FakeRegistry(down=True)
    event = promotion(ONNX, 3)
    with pytest.raises(ModelUnavailableError, match="failed \\(503\\)"):
        await check(registry).verify(event.model, event.onnx_uri)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    unreachable = RegistryCheck("http://mlflow.test", httpx.MockTransport(refuse))
    with pytest.raises(ModelUnavailableError, match="cannot be reached"):
        await unreachable.verify(event.model, event.onnx_uri)


async def test_the_registry_is_asked_before_the_model_is_read() -> None:
    store, registry = FakeObjectStore(), FakeRegistry()
    event = promotion(ONNX, 3)
    store.add(event.onnx_uri, ONNX)  # the forger wrote the object, but not the registry
    with pytest.raises(ModelRejectedError, match="not in the model registry"):
        await fetch_and_build(
            store.as_store(), event.model, event.onnx_uri, OPTIONS, "mlflow", check(registry)
        )
    assert store.reads == []

    registry.add(ONNX, 3)
    loaded = await fetch_and_build(
        store.as_store(), event.model, event.onnx_uri, OPTIONS, "mlflow", check(registry)
    )
    assert loaded.ref == event.model
    assert store.reads == [event.onnx_uri]
