"""Traces on the real stack (OBSERVABILITY=1): one upload is one trace in Jaeger, from the
gateway's span through the inference worker's to history-service's two, each the child of the
one before; a promotion from the CLI is one trace that every service's reading of it joins."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from mnistream_cli.traces import Span, spans_of

from tests.e2e.support import mnistream
from tests.polling import eventually
from tests.stack import require_jaeger
from tests.system import System

pytestmark = pytest.mark.e2e


async def jaeger(path: str, **params: Any) -> Any:
    async with httpx.AsyncClient(base_url=require_jaeger(), timeout=10) as client:
        answer = await client.get(path, params=params)
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        return answer.json()["data"]


async def trace_with(trace_id: str, *wanted: tuple[str, str]) -> list[Span] | None:
    """The trace's spans once it has a span of every (service, name) in `wanted`."""
    found = await jaeger(f"/api/traces/{trace_id}")
    if not found:
        return None
    spans = spans_of(found[0])
    have = {(s.service, s.name) for s in spans}
    return spans if set(wanted) <= have else None


def only(spans: list[Span], service: str, name: str) -> Span:
    matching = [s for s in spans if (s.service, s.name) == (service, name)]
    assert len(matching) == 1, (service, name, spans)
    return matching[0]


async def test_one_upload_is_one_trace_through_gateway_inference_and_history(
    system: System, drawings: list[bytes]
) -> None:
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
        answer = await client.post(
            "/api/predictions?wait=5000",
            content=drawings[0],
            headers={"content-type": "image/png"},
        )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    trace_id, digit_id = body["trace_id"], body["digit_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id), body
    assert body["trace_url"] == f"{require_jaeger()}/api/traces/{trace_id}"

    upload = ("gateway", "POST /api/predictions")
    read = ("inference-worker", "digits.submitted process")
    stored = ("history-service", "digits.submitted process")
    recorded = ("history-service", "digits.predicted process")
    spans = await eventually(
        lambda: trace_with(trace_id, upload, read, stored, recorded),
        30,
        f"trace {trace_id} with the gateway's, the worker's and history-service's spans",
        interval=0.5,
    )
    assert spans is not None
    root, inference = only(spans, *upload), only(spans, *read)
    assert root.parent_id is None
    assert root.tags["mnistream.digit_id"] == digit_id
    assert root.tags["mnistream.status"] == "predicted"
    assert inference.parent_id == root.span_id
    assert inference.tags["mnistream.kind"] == "live"
    assert inference.tags["mnistream.model_version"] == body["prediction"]["model"]["version"]
    assert only(spans, *stored).parent_id == root.span_id
    # The prediction carries the worker's span on: history's reading of it is its child.
    assert only(spans, *recorded).parent_id == inference.span_id

    # `mnistream trace` finds the same trace by the digit id and shows every service's span.
    shown = mnistream("trace", digit_id, env={"JAEGER_URL": require_jaeger()}).stdout
    assert f"trace {trace_id}" in shown
    for service in ("gateway", "inference-worker", "history-service"):
        assert service in shown


async def test_a_promotion_from_the_cli_is_one_trace_every_service_joins(system: System) -> None:
    """The suite's first promotion (`mnistream promote`, with tracing on) is read in its trace
    by every inference worker, by history-service and by the rescore workers."""
    wanted = {
        ("mnistream-cli", "mnistream promote"),
        ("inference-worker", "model.promoted process"),
        ("history-service", "model.promoted process"),
        ("rescore-worker", "model.promoted process"),
    }
    workers = {name for name in system.services if name.startswith("inference")}

    async def promotion() -> list[Span] | None:
        found = await jaeger(
            "/api/traces", service="mnistream-cli", operation="mnistream promote", limit=50
        )
        for trace in found or []:
            spans = spans_of(trace)
            readers = {s.instance for s in spans if s.service == "inference-worker"}
            if wanted <= {(s.service, s.name) for s in spans} and len(readers) >= len(workers):
                return spans
        return None

    spans = await eventually(promotion, 60, "a promotion's trace joined by every service", 1.0)
    assert spans is not None
    (command,) = [s for s in spans if s.service == "mnistream-cli"]
    assert command.parent_id is None
