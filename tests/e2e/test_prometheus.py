"""Prometheus on the real stack (OBSERVABILITY=1): it finds every service of a running system
by the targets file mnistream-system writes, scrapes each at the documented /metrics, and a
dead letter planted on a topic fires the DeadLettersArriving alert, read from its alerts API."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from mnistream_common.kafka import client_options
from mnistream_common.topics import DIGITS_LABELED

from tests.e2e.support import upload_all
from tests.polling import eventually
from tests.stack import require_kafka, require_prometheus
from tests.system import ROOT, System

pytestmark = pytest.mark.e2e


async def api(path: str, **params: str) -> Any:
    async with httpx.AsyncClient(base_url=require_prometheus(), timeout=10) as client:
        answer = await client.get(f"/api/v1/{path}", params=params)
        answer.raise_for_status()
        return answer.json()["data"]


def addresses(system: System) -> dict[str, str]:
    """Each running service's metrics address, by its process name."""
    return {name: f"127.0.0.1:{system.port_of(name)}" for name in system.services}


async def test_every_service_is_up_at_its_documented_metrics_path(system: System) -> None:
    expected = addresses(system)
    found: dict[str, dict[str, Any]] = {}

    async def all_up() -> bool:
        targets = (await api("targets", state="active"))["activeTargets"]
        found.clear()
        found.update({t["labels"]["instance"]: t for t in targets})
        return all(found.get(a, {}).get("health") == "up" for a in expected.values())

    await eventually(all_up, 60, "every service of the system up in Prometheus")
    for name, address in expected.items():
        target = found[address]
        assert target["scrapeUrl"] == f"http://{address}/metrics", target
        assert target["labels"]["process"] == name
    services = {found[a]["labels"]["service"] for a in expected.values()}
    assert services == {"gateway", "history-service", "inference-worker", "rescore-worker"}
    up = await api("query", query='up{process="gateway"}')
    assert any(r["value"][1] == "1" for r in up["result"]), up


async def test_a_planted_dead_letter_fires_its_alert(system: System) -> None:
    producer = AIOKafkaProducer(**client_options(require_kafka()), acks="all")
    await producer.start()
    try:  # history-service reads digits.labeled: a record that is not JSON is a dead letter
        await producer.send_and_wait(
            DIGITS_LABELED.name, b"{not json", key=f"planted-{uuid.uuid4()}".encode()
        )
    finally:
        await producer.stop()
    firing: list[dict[str, Any]] = []

    async def fired() -> bool:
        alerts = (await api("alerts"))["alerts"]
        firing[:] = [
            a
            for a in alerts
            if a["labels"]["alertname"] == "DeadLettersArriving" and a["state"] == "firing"
        ]
        return any(
            a["labels"].get("topic") == DIGITS_LABELED.name
            and a["labels"].get("service") == "history-service"
            for a in firing
        )

    await eventually(fired, 90, "DeadLettersArriving firing for digits.labeled")
    [alert] = [a for a in firing if a["labels"]["topic"] == DIGITS_LABELED.name]
    assert "digits.deadletter" in alert["annotations"]["summary"]


async def test_every_panel_of_the_dashboard_returns_data(
    system: System, drawings: list[bytes]
) -> None:
    """The provisioned dashboard's queries (`make lint` checks the file is what
    scripts/dashboard.py makes), as Grafana would run them (its rate window set to a
    minute), against the test stack while drawings arrive; the dead letter planted above keeps
    an alert firing for five minutes."""
    document = json.loads(
        (ROOT / "infra" / "grafana" / "dashboards" / "mnistream.json").read_text()
    )
    panels = {p["title"]: p for p in document["panels"] if p["type"] != "row"}
    assert len(panels) == 12
    exprs = [t["expr"] for p in panels.values() for t in p["targets"]]
    await upload_all(system.gateway_url, drawings[:40], concurrency=4)
    await asyncio.sleep(12)  # two scrapes
    empty = []
    for expr in exprs:
        result = (await api("query", query=expr.replace("$__rate_interval", "1m")))["result"]
        if not result:
            empty.append(expr)
    assert not empty, f"these panels show nothing: {empty}"
    [p99] = [
        t["expr"] for t in panels["Upload to prediction (ms)"]["targets"] if "0.99" in t["expr"]
    ]
    latency = await api("query", query=p99.replace("$__rate_interval", "1m"))
    assert all(float(r["value"][1]) > 0 for r in latency["result"]), latency
