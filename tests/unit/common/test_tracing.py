"""Traces through the typed subscriber path: each drawing's span in its own trace, a batch span
linking them, the context handed on, failures marked, and nothing at all when tracing is off."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator, Sequence

import pytest
from mnistream_common import tracing
from mnistream_common.consume import Delivery, LogRejects, Rejected, typed_batch
from mnistream_common.events import DigitSubmitted
from mnistream_common.logs import configure_logging, get_logger
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.helpers import FakeRecord, deliver, submitted

# A trace id and a span id as the gateway would have sent them.
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def traceparent(trace_id: str = TRACE, span_id: str = PARENT) -> list[tuple[str, bytes]]:
    return [("traceparent", f"00-{trace_id}-{span_id}-01".encode())]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing("test", "", exporter=exporter)
    yield exporter
    tracing.shutdown_tracing()


def drawing_records(headers: Sequence[list[tuple[str, bytes]]]) -> list[FakeRecord]:
    return [
        FakeRecord("digits.submitted", 0, n, b"k%d" % n, submitted().to_bytes(), h)
        for n, h in enumerate(headers)
    ]


class Handler:
    """Keeps what it was handed; rejects the record at `reject_offset`."""

    def __init__(self, reject_offset: int | None = None, fail: bool = False) -> None:
        self.handed: list[Delivery[DigitSubmitted]] = []
        self.reject_offset = reject_offset
        self.fail = fail
        self.headers_during: dict[str, str] = {}

    async def __call__(self, deliveries: list[Delivery[DigitSubmitted]]) -> Sequence[Rejected]:
        self.handed = deliveries
        self.headers_during = tracing.headers()
        if self.fail:
            raise RuntimeError("the database is down")
        return [
            Rejected(d.record, "too small to read")
            for d in deliveries
            if d.record.offset == self.reject_offset
        ]


def hex_id(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def finished(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return list(exporter.get_finished_spans())


async def test_each_drawing_gets_a_span_in_its_own_trace_and_the_batch_links_them(
    spans: InMemorySpanExporter,
) -> None:
    other = "0af7651916cd43dd8448eb211c80319c"
    batch = drawing_records([traceparent(), traceparent(other, "b7ad6b7169203331"), []])
    handler = Handler(reject_offset=1)
    await deliver(typed_batch(DigitSubmitted, LogRejects("test"))(handler), batch)

    done = finished(spans)
    by_trace = {hex_id(s.context.trace_id, 32): s for s in done if s.parent is not None}
    assert set(by_trace) == {TRACE, other}
    mine = by_trace[TRACE]
    assert mine.name == "digits.submitted process"
    assert mine.kind is SpanKind.CONSUMER
    assert mine.parent is not None and hex_id(mine.parent.span_id, 16) == PARENT
    assert mine.attributes is not None and mine.attributes["messaging.kafka.message.offset"] == 0
    assert mine.status.status_code is StatusCode.UNSET
    refused = by_trace[other]
    assert refused.status.status_code is StatusCode.ERROR
    assert refused.status.description == "too small to read"

    roots = [s for s in done if s.parent is None]
    assert len(roots) == 1, "one batch span"
    root = roots[0]
    assert {hex_id(link.context.trace_id, 32) for link in root.links} == {TRACE, other}
    assert [link.context.span_id for link in mine.links] == [root.context.span_id]
    assert root.attributes is not None and root.attributes["messaging.batch.message_count"] == 3

    # Each traced delivery hands on its own span; the untraced one hands on nothing.
    handed = {d.record.offset: d.trace for d in handler.handed}
    assert handed[2] is None
    carried = tracing.headers(handed[0])["traceparent"]
    assert carried == f"00-{TRACE}-{hex_id(mine.context.span_id, 16)}-01"


async def test_a_batch_of_one_is_its_drawings_span_in_the_drawings_trace(
    spans: InMemorySpanExporter,
) -> None:
    handler = Handler()
    await deliver(
        typed_batch(DigitSubmitted, LogRejects("test"))(handler), drawing_records([traceparent()])
    )

    (only,) = finished(spans)
    assert hex_id(only.context.trace_id, 32) == TRACE
    assert only.parent is not None and hex_id(only.parent.span_id, 16) == PARENT
    # What the handler publishes meanwhile (a rescore plan) continues that trace.
    assert handler.headers_during["traceparent"].split("-")[1] == TRACE


async def test_a_failing_handler_marks_every_drawings_span_failed(
    spans: InMemorySpanExporter,
) -> None:
    handler = Handler(fail=True)
    with pytest.raises(RuntimeError):
        await deliver(
            typed_batch(DigitSubmitted, LogRejects("test"))(handler),
            drawing_records([traceparent(), traceparent("0af7651916cd43dd8448eb211c80319c")]),
        )
    drawings = [s for s in finished(spans) if s.parent is not None]
    assert len(drawings) == 2
    for span in drawings:
        assert span.status.status_code is StatusCode.ERROR
        assert "the database is down" in (span.status.description or "")
        assert [e.name for e in span.events] == ["exception"]


async def test_off_no_span_is_made_and_no_header_is_read_or_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not tracing.enabled()

    def read(_: object) -> None:
        raise AssertionError("a header was read with tracing off")

    monkeypatch.setattr(tracing, "record_context", read)
    handler = Handler()
    await deliver(
        typed_batch(DigitSubmitted, LogRejects("test"))(handler),
        drawing_records([traceparent(), traceparent()]),
    )
    assert [d.trace for d in handler.handed] == [None, None]
    assert handler.headers_during == {}
    with tracing.span("anything") as span:
        assert tracing.trace_id(span) is None
        assert tracing.headers() == {}


async def test_a_batch_that_carries_no_trace_makes_no_span(spans: InMemorySpanExporter) -> None:
    """Labels, erasures, dead letters: nothing to continue, so nothing is started."""
    handler = Handler()
    await deliver(
        typed_batch(DigitSubmitted, LogRejects("test"))(handler), drawing_records([[], []])
    )
    assert finished(spans) == []
    assert [d.trace for d in handler.handed] == [None, None]


async def test_a_cancelled_batch_does_not_mark_its_spans_failed(
    spans: InMemorySpanExporter,
) -> None:
    """A service stopping cancels the batch under way: that is no failure of the drawing."""

    async def cancelled(deliveries: list[Delivery[DigitSubmitted]]) -> Sequence[Rejected]:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await deliver(
            typed_batch(DigitSubmitted, LogRejects("test"))(cancelled),
            drawing_records([traceparent(), traceparent()]),
        )
    drawings = [s for s in finished(spans) if s.parent is not None]
    assert len(drawings) == 2  # ended all the same
    assert {s.status.status_code for s in drawings} == {StatusCode.UNSET}


def test_a_record_with_a_malformed_traceparent_carries_no_trace() -> None:
    assert tracing.record_context([("traceparent", b"not-a-trace")]) is None
    assert tracing.record_context([("traceparent", None)]) is None  # type: ignore[list-item]
    assert tracing.record_context([("other", b"x")]) is None
    assert tracing.record_context(traceparent()) is not None


def test_log_lines_made_in_a_span_carry_its_trace_id(
    spans: InMemorySpanExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("test")
    log = get_logger("test")
    with tracing.span("upload") as span:
        log.info("inside")
    log.info("outside")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    inside, outside = (next(x for x in lines if x["event"] == e) for e in ("inside", "outside"))
    assert inside["trace_id"] == tracing.trace_id(span)
    assert inside["span_id"] == hex_id(span.get_span_context().span_id, 16)
    assert "trace_id" not in outside
    logging.getLogger().handlers.clear()


async def test_a_trace_the_sampler_leaves_out_is_left_out_everywhere() -> None:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing("test", "", sample_ratio=0.0, exporter=exporter)
    try:
        with tracing.span("POST /api/predictions") as upload:
            assert tracing.trace_id(upload) is None  # no link to a trace that is not kept
            carried = tracing.headers()["traceparent"]
        assert not int(carried.split("-")[3], 16) & 1, carried  # not sampled, as all will know
        handler = Handler()
        callback = typed_batch(DigitSubmitted, LogRejects("test"))(handler)
        await deliver(callback, drawing_records([[("traceparent", carried.encode())]] * 2))
        assert exporter.get_finished_spans() == ()
        # A trace another process chose to keep is kept here too, whatever this one's ratio.
        await deliver(callback, drawing_records([traceparent()]))
        (kept,) = exporter.get_finished_spans()
        assert format(kept.context.trace_id, "032x") == TRACE
    finally:
        tracing.shutdown_tracing()


def test_log_lines_name_no_trace_the_sampler_left_out(capsys: pytest.CaptureFixture[str]) -> None:
    tracing.configure_tracing("test", "", sample_ratio=0.0, exporter=InMemorySpanExporter())
    try:
        configure_logging("test")
        with tracing.span("upload"):
            get_logger("test").info("inside an unkept trace")
    finally:
        tracing.shutdown_tracing()
        logging.getLogger().handlers.clear()
    (line,) = [json.loads(x) for x in capsys.readouterr().err.splitlines() if "unkept" in x]
    assert "trace_id" not in line
