"""What tracing costs per drawing, in one process: the typed subscriber path over a batch of
`digits.submitted` records that carry a traceparent (as the gateway sends them), and the
gateway's upload span, each with tracing off, with it on, and without the hooks at all.

Off is what every service runs when OTEL_EXPORTER_OTLP_ENDPOINT is empty; on, spans go through
the SDK's batch processor to an exporter that encodes them as OTLP protobuf (what is sent to a
collector) and drops the bytes, so the figure is the services' CPU and not a network's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from mnistream_common import tracing
from mnistream_common.consume import (
    Delivery,
    LogRejects,
    Rejected,
    parse_records,
    records_of,
    typed_batch,
)
from mnistream_common.events import DigitSubmitted
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from bench.inputs import Drawings
from bench.stats import spread

BATCH = 32
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass(frozen=True)
class _Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


class _EncodingExporter(SpanExporter):
    """Encodes each batch of spans as the OTLP exporter would, and sends nothing."""

    def __init__(self) -> None:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        self._encode = encode_spans
        self.bytes = 0

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.bytes += len(self._encode(spans).SerializeToString())
        return SpanExportResult.SUCCESS


Work = Callable[[], Awaitable[int]]


def measure_tracing(drawings: Drawings, repeats: int, seconds: float) -> dict[str, Any]:
    """µs per drawing of the subscriber path and of the upload span: no hooks, off, on."""
    subscriber, without_hooks = _subscriber_paths(drawings)
    configurations: tuple[tuple[str, Work, bool], ...] = (
        ("subscriber_no_hooks", without_hooks, False),
        ("subscriber_off", subscriber, False),
        ("subscriber_on", subscriber, True),
        ("upload_span_off", _upload_span, False),
        ("upload_span_on", _upload_span, True),
    )
    runs: dict[str, list[float]] = {}
    exporter = _EncodingExporter()
    for _ in range(repeats):
        # The configurations take turns within each repeat (as in raw.py).
        for name, work, on in configurations:
            if on:  # as a service has it: the SDK's batch processor
                tracing.configure_tracing("bench", "", exporter=exporter, batched=True)
            try:
                runs.setdefault(name, []).append(asyncio.run(_us_per_item(work, seconds)))
            finally:
                tracing.shutdown_tracing()  # the batch processor's thread sends what it holds
    found: dict[str, Any] = {name: spread(values) for name, values in runs.items()}
    found["batch"] = BATCH
    found["otlp_bytes_encoded"] = exporter.bytes
    return found


def _subscriber_paths(drawings: Drawings) -> tuple[Work, Work]:
    """The typed subscriber callback over a batch of traced records, and the same callback as
    typed_batch made it before tracing (the same steps without the tracing check)."""
    records = [
        _Record(
            "digits.submitted",
            0,
            n,
            str(event.digit_id).encode(),
            event.to_bytes(),
            [("traceparent", TRACEPARENT.encode())],
        )
        for n, event in enumerate(drawings.submitted(i % len(drawings.pngs)) for i in range(BATCH))
    ]
    message: Any = SimpleNamespace(raw_message=tuple(records))
    rejects = LogRejects("bench")

    async def handler(deliveries: list[Delivery[DigitSubmitted]]) -> Sequence[Rejected]:
        for delivery in deliveries:  # what a handler does with each: hand its trace on
            tracing.headers(delivery.trace) if delivery.trace is not None else None
        return []

    seam = typed_batch(DigitSubmitted, rejects)(handler)

    async def through_the_seam() -> int:
        await seam(message)
        return BATCH

    async def without_hooks() -> int:
        deliveries, rejected = parse_records(records_of(message), DigitSubmitted)
        if deliveries:
            rejected.extend(await handler(deliveries))
        if rejected:
            await rejects(rejected)
        return BATCH

    return through_the_seam, without_hooks


async def _upload_span() -> int:
    with tracing.span("POST /api/predictions", kind=SpanKind.SERVER) as span:
        span.set_attribute("mnistream.digit_id", "01a250ac-850b-7c2e-93d6-44c7c4064f9f")
        tracing.headers()
    tracing.trace_id(span)
    return 1


async def _us_per_item(work: Callable[[], Awaitable[int]], seconds: float) -> float:
    """CPU µs per item of `work` (which returns how many items it did), run for `seconds`:
    process CPU time, so the batch processor's own thread counts too."""
    await work()  # warm
    done = 0
    wall, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        done += await work()
    return (time.process_time() - cpu) / done * 1e6
