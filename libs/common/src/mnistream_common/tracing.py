"""OpenTelemetry traces: one trace per drawing, its context carried in Kafka headers.

    gateway: POST /api/predictions ─traceparent─▶ inference-worker: digits.submitted process
                                                  │ (its batch span links every drawing)
        history-service: digits.predicted ◀───────┘ (the drawing's context handed on)
        history-service: digits.submitted process

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` names an OTLP/HTTP collector (Jaeger's is
http://127.0.0.1:4318): then spans go there in batches, from a thread of their own. Off, no span
is made and no header is read or written: every entry point checks `enabled()` first.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mnistream_common.settings import TracingSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

_PROPAGATOR = TraceContextTextMapPropagator()
_INVALID = trace.INVALID_SPAN


class _Tracing:
    tracer: Tracer | None = None
    provider: TracerProvider | None = None


_state = _Tracing()


def configure_tracing(
    service: str,
    endpoint: str,
    *,
    sample_ratio: float = 1.0,
    exporter: SpanExporter | None = None,
    batched: bool = False,
) -> bool:
    """Send this process's spans to the OTLP/HTTP collector at `endpoint` as `service`, in
    batches from a thread of their own (or to `exporter`: span by span, or in batches too with
    `batched`); nothing when
    neither is given. A trace this process starts is kept with probability `sample_ratio`; one
    it continues follows the decision of the process that started it. Whether tracing is on."""
    if not endpoint and exporter is None:
        return False
    # Imported here: a process that never traces never loads the SDK or the exporter.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    resource = Resource.create(
        {"service.name": service, "service.instance.id": f"{os.uname().nodename}:{os.getpid()}"}
    )
    sampler = ParentBased(TraceIdRatioBased(sample_ratio))
    provider = TracerProvider(resource=resource, sampler=sampler)
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter, batched = (
            OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", timeout=5),
            True,
        )
    processor = (
        BatchSpanProcessor(exporter, schedule_delay_millis=1000)
        if batched
        else SimpleSpanProcessor(exporter)
    )
    provider.add_span_processor(processor)
    use_provider(provider)
    return True


def trace_service(service: str, settings: TracingSettings) -> bool:
    """`configure_tracing` as the settings (OTEL_EXPORTER_OTLP_ENDPOINT, TRACE_SAMPLE_RATIO)
    say."""
    return configure_tracing(
        service, settings.otel_exporter_otlp_endpoint, sample_ratio=settings.trace_sample_ratio
    )


def use_provider(provider: TracerProvider) -> None:
    """Make spans with `provider` from now on (tracing on)."""
    shutdown_tracing()
    _state.provider, _state.tracer = provider, provider.get_tracer("mnistream")


def shutdown_tracing() -> None:
    """Send the spans still held, then stop tracing (a service stopping, the CLI exiting)."""
    provider, _state.provider, _state.tracer = _state.provider, None, None
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    """Whether spans are made and sent."""
    return _state.tracer is not None


def tracer() -> Tracer:
    """The tracer (a no-op one when tracing is off)."""
    return _state.tracer or trace.NoOpTracer()


@contextlib.contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    context: Context | None = None,
    failed_by_exceptions: bool = True,
) -> Iterator[Span]:
    """A span made current for the block (the invalid span, at no cost, when tracing is off);
    an exception leaving the block marks it failed unless `failed_by_exceptions` is false (the
    caller then says what a failure is)."""
    if _state.tracer is None:
        yield _INVALID
        return
    with _state.tracer.start_as_current_span(
        name,
        kind=kind,
        attributes=attributes,
        context=context,
        record_exception=failed_by_exceptions,
        set_status_on_exception=failed_by_exceptions,
    ) as current:
        yield current


def trace_id(of: Span | None = None) -> str | None:
    """The trace id (32 hex digits) of `of`, or of the current span; None outside any trace
    and for a trace the sampler left out (nothing of it is kept anywhere)."""
    found = (of or trace.get_current_span()).get_span_context()
    return format(found.trace_id, "032x") if found.is_valid and found.trace_flags.sampled else None


def headers(context: Context | None = None) -> dict[str, str]:
    """The W3C `traceparent` header of `context` (default: the current one) for a Kafka record;
    empty when tracing is off or there is no trace."""
    if _state.tracer is None:
        return {}
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    return carrier


def kafka_headers(context: Context | None = None) -> list[tuple[str, bytes]]:
    """`headers` as aiokafka's producer takes them."""
    return [(k, v.encode()) for k, v in headers(context).items()]


def record_context(record_headers: Sequence[tuple[str, bytes]] | None) -> Context | None:
    """The trace context a Kafka record carries in its headers, if any."""
    if not record_headers:
        return None
    carrier = {
        k: v.decode("latin-1") for k, v in record_headers if k == "traceparent" and v is not None
    }
    if not carrier:
        return None
    found = _PROPAGATOR.extract(carrier)
    return found if trace.get_current_span(found).get_span_context().is_valid else None


def link_to(context: Context) -> Link:
    """A link to the span of `context`."""
    return Link(trace.get_current_span(context).get_span_context())


def failed(target: Span, reason: str) -> None:
    """Mark a span failed, saying why."""
    target.set_status(Status(StatusCode.ERROR, reason[:500]))


def log_trace_ids(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the current trace and span ids on every log line made in a span."""
    found = trace.get_current_span().get_span_context()
    if found.is_valid and found.trace_flags.sampled:  # only traces that are kept somewhere
        event_dict.setdefault("trace_id", format(found.trace_id, "032x"))
        event_dict.setdefault("span_id", format(found.span_id, "016x"))
    return event_dict


@contextlib.contextmanager
def command_span(service: str, settings: TracingSettings, name: str) -> Iterator[Span]:
    """A command line's one trace: tracing on for the block when the settings name a
    collector, a span around it, and every span sent before the block ends."""
    trace_service(service, settings)
    try:
        with span(name) as current:
            yield current
    finally:
        shutdown_tracing()
