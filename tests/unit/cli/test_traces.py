"""`mnistream trace` over Jaeger's query API (faked here; tests/e2e/test_tracing.py reads the
real one): a trace as a waterfall, a drawing found by its digit id, the slowest uploads."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
import typer
from mnistream_cli.traces import Jaeger, depth_first, find, spans_of, uploads_of

TRACE = "8ede1dc24e4e21c18662a4760f6f854a"
DIGIT = uuid.UUID("01a250ae-c1ee-7315-9967-0850ec53cb2e")


def span(
    span_id: str,
    parent: str | None,
    process: str,
    name: str,
    at_ms: float,
    took_ms: float,
    **tags: Any,
) -> dict[str, Any]:
    return {
        "spanID": span_id,
        "operationName": name,
        "references": [{"refType": "CHILD_OF", "spanID": parent}] if parent else [],
        "startTime": 1_796_649_813_000_000 + int(at_ms * 1000),
        "duration": int(took_ms * 1000),
        "processID": process,
        "tags": [{"key": k, "value": v} for k, v in tags.items()],
    }


def drawing_trace(trace_id: str = TRACE, answered_ms: float | None = 49.8) -> dict[str, Any]:
    spans = [
        span(
            "a", None, "p1", "POST /api/predictions", 0, 37.4, **{"mnistream.digit_id": str(DIGIT)}
        ),
        span("b", "a", "p2", "digits.submitted process", 36.3, 8.5, **{"mnistream.queue_ms": 26.2}),
        span("d", "b", "p3", "digits.predicted process", 80.4, 27.1),
        span("e", "a", "p3", "digits.submitted process", 40.3, 26.5),
    ]
    if answered_ms is not None:
        spans.append(span("c", "b", "p1", "digits.predicted process", answered_ms, 2.2))
    return {
        "traceID": trace_id,
        "spans": spans,
        "processes": {
            "p1": {"serviceName": "gateway"},
            "p2": {"serviceName": "inference-worker"},
            "p3": {"serviceName": "history-service"},
        },
    }


class FakeJaeger:
    """Answers /api/traces/ID and /api/traces?... from a few traces; keeps the queries."""

    def __init__(self, *traces: dict[str, Any]) -> None:
        self.traces = {t["traceID"]: t for t in traces}
        self.queries: list[dict[str, str]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.startswith("/api/traces/"):
            one = self.traces.get(path.rsplit("/", 1)[1])
            if one is None:
                return httpx.Response(404, json={"data": None, "errors": [{"code": 404}]})
            return httpx.Response(200, json={"data": [one]})
        query = dict(request.url.params)
        self.queries.append(query)
        wanted = json.loads(query.get("tags", "{}")).get("mnistream.digit_id")
        found = [
            t
            for t in self.traces.values()
            if wanted is None
            or any(tag["value"] == wanted for s in t["spans"] for tag in s["tags"])
        ]
        return httpx.Response(200, json={"data": found})

    def client(self) -> Jaeger:
        return Jaeger("http://jaeger.test", httpx.MockTransport(self.handle))


def test_the_waterfall_puts_each_span_under_its_parent() -> None:
    ordered = depth_first(spans_of(drawing_trace()))
    shown = [(depth, s.service, s.name) for depth, s in ordered]
    assert shown == [
        (0, "gateway", "POST /api/predictions"),
        (1, "inference-worker", "digits.submitted process"),
        (2, "gateway", "digits.predicted process"),  # siblings in the order they began
        (2, "history-service", "digits.predicted process"),
        (1, "history-service", "digits.submitted process"),
    ]
    assert ordered[1][1].tags["mnistream.queue_ms"] == 26.2


def test_a_span_whose_parent_is_missing_is_shown_at_the_top_not_lost() -> None:
    trace = drawing_trace()
    trace["spans"] = [s for s in trace["spans"] if s["spanID"] != "a"]
    ordered = depth_first(spans_of(trace))
    assert len(ordered) == 4
    assert {s.span_id for depth, s in ordered if depth == 0} == {"b", "e"}


def test_a_trace_id_is_read_directly_and_a_digit_id_is_searched_by_its_tag() -> None:
    jaeger = FakeJaeger(drawing_trace(), drawing_trace("0" * 32))
    with jaeger.client() as client:
        assert find(client, TRACE, 3600)["traceID"] == TRACE
        assert jaeger.queries == []
        assert find(client, str(DIGIT), 3600)["traceID"] in (TRACE, "0" * 32)
    (query,) = jaeger.queries
    assert query["service"] == "gateway"
    assert query["operation"] == "POST /api/predictions"
    assert json.loads(query["tags"]) == {"mnistream.digit_id": str(DIGIT)}
    assert int(query["end"]) - int(query["start"]) == 3600 * 1_000_000


@pytest.mark.parametrize("what", ["not-an-id", "ffff", str(uuid.uuid4()), "f" * 32])
def test_what_names_no_trace_is_a_clear_error(what: str) -> None:
    with FakeJaeger(drawing_trace()).client() as client, pytest.raises(typer.Exit) as exited:
        find(client, what, 60)
    assert exited.value.exit_code == 1


def test_jaeger_down_is_a_clear_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = Jaeger("http://jaeger.test", httpx.MockTransport(refuse))
    with client, pytest.raises(typer.Exit):
        client.trace(TRACE)


def test_the_slowest_uploads_are_those_answered_last_and_unanswered_ones_come_first() -> None:
    traces = [
        drawing_trace("1" * 32, answered_ms=12.0),
        drawing_trace("2" * 32, answered_ms=None),
        drawing_trace("3" * 32, answered_ms=49.8),
    ]
    found = uploads_of(traces)
    assert [u.trace_id[0] for u in found] == ["2", "3", "1"]
    assert found[1].answered_ms == pytest.approx(49.8)
    assert found[0].answered_ms is None
    assert found[1].whole_ms == pytest.approx(107.5)  # history's last write ends the trace
    assert found[1].digit_id == str(DIGIT)
