"""Metrics every consuming service exports: consumer lag and dead letters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, make_asgi_app
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send


class _Exposition:
    """prometheus_client's ASGI exposition as an endpoint object (Starlette routes a callable
    object as an ASGI app, a plain function as a request handler)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._app = make_asgi_app(registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


def metrics_routes(registry: CollectorRegistry) -> list[BaseRoute]:
    """`/metrics` itself, where Prometheus scrapes by default, and `/metrics/` as before: a mount
    alone answers only below it (a 307 to `/metrics/`, or a 404 where `/` serves files)."""
    exposition = _Exposition(registry)
    return [Route("/metrics", exposition), Mount("/metrics", exposition)]


def dead_letter_counter(registry: CollectorRegistry) -> Counter:
    """`mnistream_dead_letters{topic, reason}`: records this process sent to digits.deadletter."""
    return Counter(
        "mnistream_dead_letters",
        "Records sent to digits.deadletter, by source topic and the reason's first words.",
        ["topic", "reason"],
        registry=registry,
    )


def lag_gauge(registry: CollectorRegistry) -> Gauge:
    """`mnistream_consumer_lag{group, topic}`: records not yet consumed by this process."""
    return Gauge(
        "mnistream_consumer_lag",
        "Records on this process's assigned partitions that it has not consumed yet.",
        ["group", "topic"],
        registry=registry,
    )


async def report_lag(
    subscribers: Iterable[tuple[str, Any]], gauge: Gauge, interval: float = 5.0
) -> None:
    """Every `interval` s, set the lag of each (group, FastStream subscriber) until cancelled."""
    while True:
        for group, subscriber in subscribers:
            consumer = getattr(subscriber, "consumer", None)
            if consumer is None:
                continue
            with contextlib.suppress(Exception):  # a rebalance may be under way; next round
                await _observe(group, consumer, gauge)
        await asyncio.sleep(interval)


async def _observe(group: str, consumer: Any, gauge: Gauge) -> None:
    lag: dict[str, int] = {}
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is None:
            continue
        behind = max(0, int(highwater) - int(await consumer.position(tp)))
        lag[tp.topic] = lag.get(tp.topic, 0) + behind
    for topic, value in lag.items():
        gauge.labels(group=group, topic=topic).set(value)
