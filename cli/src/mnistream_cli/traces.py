"""`mnistream trace`: one drawing's path through the system as a waterfall, read from Jaeger's
query API, and the slowest uploads of the last minutes: the trace UI of a terminal, and the
way from "p99 went up" to "this drawing waited 40 ms for a batch"."""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from mnistream_cli.operate import console, fail
from mnistream_cli.settings import Settings

UPLOAD = ("gateway", "POST /api/predictions")
TRACE_ID = re.compile(r"[0-9a-f]{32}")
# The span tags worth a column: where a drawing's time went, and who read it.
SHOWN = (
    "mnistream.digit_id",
    "mnistream.status",
    "mnistream.model_version",
    "mnistream.kind",
    "mnistream.digit",
    "mnistream.queue_ms",
    "mnistream.inference_ms",
    "mnistream.batch_size",
    "messaging.batch.message_count",
    "error",
)


@dataclass(frozen=True)
class Span:
    """One span of a Jaeger trace, as the waterfall shows it."""

    span_id: str
    parent_id: str | None
    service: str
    name: str
    start_us: int
    duration_us: int
    tags: dict[str, Any]
    instance: str = ""  # the process (service.instance.id: host and pid)


def spans_of(trace: dict[str, Any]) -> list[Span]:
    """The spans of a trace from Jaeger's API, oldest first."""
    processes = trace.get("processes", {})
    found = []
    for span in trace.get("spans", []):
        parents = [r["spanID"] for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
        process = processes.get(span.get("processID"), {})
        found.append(
            Span(
                span["spanID"],
                parents[0] if parents else None,
                process.get("serviceName", "?"),
                span["operationName"],
                int(span["startTime"]),
                int(span["duration"]),
                {t["key"]: t["value"] for t in span.get("tags", [])},
                next(
                    (
                        str(t["value"])
                        for t in process.get("tags", [])
                        if t["key"] == "service.instance.id"
                    ),
                    "",
                ),
            )
        )
    return sorted(found, key=lambda s: s.start_us)


def depth_first(spans: list[Span]) -> list[tuple[int, Span]]:
    """Each span with its depth, every child right under its parent (orphans at the top)."""
    known = {s.span_id for s in spans}
    children: dict[str | None, list[Span]] = {}
    for span in spans:
        parent = span.parent_id if span.parent_id in known else None
        children.setdefault(parent, []).append(span)
    ordered: list[tuple[int, Span]] = []
    stack = [(0, s) for s in reversed(children.get(None, []))]
    while stack:
        depth, span = stack.pop()
        ordered.append((depth, span))
        stack += [(depth + 1, c) for c in reversed(children.get(span.span_id, []))]
    return ordered


class Jaeger:
    """The part of Jaeger's query API (`/api/traces`) that the command reads."""

    def __init__(self, url: str, transport: httpx.BaseTransport | None = None) -> None:
        self._client = httpx.Client(base_url=url, timeout=10, transport=transport)
        self.url = url

    def __enter__(self) -> Jaeger:
        return self

    def __exit__(self, *_: object) -> None:
        self._client.close()

    def _get(self, path: str, **params: Any) -> Any:
        try:
            answer = self._client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise fail(
                f"Jaeger is unreachable at {self.url} ({exc}); run the stack with "
                "OBSERVABILITY=1, or set JAEGER_URL"
            ) from exc
        if answer.status_code == 404:
            return []
        if answer.is_error:
            raise fail(f"Jaeger answered {answer.status_code}: {answer.text[:300]}")
        return answer.json().get("data") or []

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        """One trace by its id."""
        found = self._get(f"/api/traces/{trace_id}")
        return found[0] if found else None

    def uploads(self, since_s: float, *, digit_id: uuid.UUID | None = None) -> list[Any]:
        """The traces of the uploads of the last `since_s` seconds (of one drawing, if given)."""
        now_us = int(time.time() * 1e6)
        params: dict[str, Any] = {
            "service": UPLOAD[0],
            "operation": UPLOAD[1],
            "start": now_us - int(since_s * 1e6),
            "end": now_us,
            "limit": 1 if digit_id else 2000,
        }
        if digit_id is not None:
            params["tags"] = json.dumps({"mnistream.digit_id": str(digit_id)})
        return list(self._get("/api/traces", **params))


def trace(
    what: Annotated[
        str | None,
        typer.Argument(help="A trace id (32 hex digits, as the web page shows) or a digit id."),
    ] = None,
    slowest: Annotated[int, typer.Option(min=0, help="List the N slowest uploads instead.")] = 0,
    since: Annotated[
        int, typer.Option(min=1, help="Minutes back that --slowest and a digit id look.")
    ] = 60,
) -> None:
    """One drawing's trace as a waterfall (the gateway's upload, the worker's batch, history's
    writes: when each began, how long it took, the batch and model), or the slowest uploads
    of the last minutes with their trace ids. Reads Jaeger's API (JAEGER_URL)."""
    with Jaeger(Settings().jaeger_url) as jaeger:
        if slowest:
            show_slowest(jaeger.uploads(since * 60.0), slowest, since)
            return
        if what is None:
            raise fail("give a trace id or a digit id, or --slowest N")
        show_waterfall(find(jaeger, what.strip().lower(), since * 60.0))


def find(jaeger: Jaeger, what: str, since_s: float) -> dict[str, Any]:
    """The trace `what` names: a trace id, or the upload of a digit id."""
    if TRACE_ID.fullmatch(what):
        found = jaeger.trace(what)
        if found is None:
            raise fail(f"Jaeger has no trace {what} (it keeps the newest traces in memory)")
        return found
    try:
        digit_id = uuid.UUID(what)
    except ValueError as exc:
        raise fail(f"{what!r} is neither a trace id (32 hex digits) nor a digit id") from exc
    uploads = jaeger.uploads(since_s, digit_id=digit_id)
    if not uploads:
        raise fail(
            f"no traced upload of {digit_id} in the last {since_s / 60:g} minutes "
            "(tracing off, sampled out, or older: try --since)"
        )
    found = jaeger.trace(uploads[0]["traceID"])
    return found or uploads[0]


def show_waterfall(found: dict[str, Any]) -> None:
    """The trace's spans, each under its parent, with a bar on a common time line."""
    spans = spans_of(found)
    if not spans:
        raise fail("the trace has no spans")
    start = min(s.start_us for s in spans)
    end = max(s.start_us + s.duration_us for s in spans)
    width, whole = 30, max(end - start, 1)
    table = Table(title=f"trace {found.get('traceID', '')}: {whole / 1000:.1f} ms end to end")
    for column in ("at ms", "took ms", "service", "span", "", "details"):
        table.add_column(column, justify="right" if "ms" in column else "left")
    for depth, span in depth_first(spans):
        offset = (span.start_us - start) * width // whole
        length = max(1, span.duration_us * width // whole)
        bar = " " * offset + "█" * min(length, width - offset)
        details = " ".join(
            f"{key.split('.')[-1]}={span.tags[key]}" for key in SHOWN if key in span.tags
        )
        table.add_row(
            f"{(span.start_us - start) / 1000:.1f}",
            f"{span.duration_us / 1000:.1f}",
            span.service,
            "  " * depth + span.name,
            bar,
            details,
        )
    console.print(table)


@dataclass(frozen=True)
class Upload:
    """One traced upload: how long until its answer reached the gateway (what the page
    waits for), and until the last span of its trace ended (history has it all)."""

    trace_id: str
    digit_id: str
    answered_ms: float | None
    whole_ms: float


ANSWER = ("gateway", "digits.predicted process")


def uploads_of(traces: list[Any]) -> list[Upload]:
    """The traced uploads among `traces`, slowest answer first (unanswered ones first of all)."""
    found = []
    for each in traces:
        spans = spans_of(each)
        roots = [s for s in spans if (s.service, s.name) == UPLOAD and s.parent_id is None]
        if not roots:
            continue
        root = roots[0]
        answers = [s.start_us for s in spans if (s.service, s.name) == ANSWER]
        last = max(s.start_us + s.duration_us for s in spans)
        found.append(
            Upload(
                each["traceID"],
                str(root.tags.get("mnistream.digit_id", "-")),
                (min(answers) - root.start_us) / 1000 if answers else None,
                (last - root.start_us) / 1000,
            )
        )
    return sorted(found, key=lambda u: (u.answered_ms is not None, -(u.answered_ms or 0)))


def show_slowest(traces: list[Any], count: int, since_min: int) -> None:
    """The `count` uploads answered slowest, with their trace ids."""
    uploads = uploads_of(traces)
    if not uploads:
        console.print(f"no traced uploads in the last {since_min} minutes")
        return
    table = Table(title=f"the {min(count, len(uploads))} slowest of {len(uploads)} traced uploads")
    table.add_column("answered ms", justify="right", no_wrap=True, min_width=9)
    table.add_column("stored ms", justify="right", no_wrap=True, min_width=9)
    table.add_column("digit id", overflow="fold")
    table.add_column("trace id", no_wrap=True, min_width=32)
    for upload in uploads[:count]:
        answered = "no answer" if upload.answered_ms is None else f"{upload.answered_ms:.1f}"
        table.add_row(answered, f"{upload.whole_ms:.1f}", upload.digit_id, upload.trace_id)
    console.print(table)
    console.print("`mnistream trace TRACE_ID` shows where one drawing's time went")
