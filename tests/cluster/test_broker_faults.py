"""Broker faults on a three-broker KRaft cluster while uploads flow: one broker lost (kill -9),
the active controller lost, a lost broker restarted, two brokers lost. With three replicas and
min.insync.replicas 2, losing one node refuses nothing and loses nothing; losing two refuses
uploads quickly (503: the gateway never accepts what Kafka cannot keep on two brokers) and the
system recovers by itself once they are back."""

from __future__ import annotations

import asyncio
import subprocess
import time

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from mnistream_common.kafka import client_options
from mnistream_common.topics import DIGITS_SUBMITTED

from tests.e2e.support import Predictions, stack_component
from tests.helpers import SEVEN, drawing_png
from tests.polling import eventually
from tests.reliability.support import Traffic, assert_nothing_lost, flowing, serving_version
from tests.stack import require_kafka
from tests.system import ROOT, System

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.timeout(600)]

NODES = (1, 2, 3)
RATE = 40.0
DOWN_S = 15.0  # longer than a fenced broker's session timeout (4 s) and the gateway's 10 s


async def champion(system: System) -> int:
    return await serving_version(system.gateway_url)


def active_controller() -> int:
    """The node id of the KRaft quorum's leader (Kafka's MetadataQuorumCommand)."""
    done = subprocess.run(
        [str(ROOT / "infra" / "stack.sh"), "kafka-leader"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return int(done.stdout.strip())


async def partitions(topic: str = DIGITS_SUBMITTED.name) -> list[dict[str, object]]:
    """Each partition of `topic`: its leader, replicas and in-sync replicas, as the cluster
    says now."""
    admin = AIOKafkaAdminClient(**client_options(require_kafka()))
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return list(described["partitions"])


async def leaders() -> set[int]:
    return {int(p["leader"]) for p in await partitions()}  # type: ignore[call-overload]


async def in_every_isr(node: int) -> bool:
    return all(node in p["isr"] for p in await partitions())  # type: ignore[operator]


def test_the_stack_is_a_cluster_of_three() -> None:
    """Every test below needs three nodes and topics with three replicas."""
    assert len(require_kafka().kafka_bootstrap_servers.split(",")) == 3
    described = asyncio.run(partitions())
    assert described and all(len(p["replicas"]) == 3 for p in described), described  # type: ignore[arg-type]


async def lose_one_node(
    system: System, predictions: Predictions, drawings: list[bytes], node: int, fault: str
) -> Traffic:
    """Kill -9 `node` while uploads flow, check leadership moved off it, restart it and wait
    until it is back in every partition's in-sync replicas; nothing refused, nothing lost."""
    started, version = time.monotonic(), await champion(system)
    assert node in await leaders(), "the node must lead partitions of digits.submitted"
    async with flowing(system.gateway_url, drawings, RATE) as traffic:
        await asyncio.to_thread(stack_component, "kill", f"kafka-{node}")
        await asyncio.sleep(DOWN_S)
        moved = await leaders()
        assert node not in moved, f"kafka-{node} still leads after {DOWN_S} s: {moved}"
        await traffic.until_accepted(100)
        await asyncio.to_thread(stack_component, "start", f"kafka-{node}")

        async def rejoined() -> bool:
            return await in_every_isr(node)

        await eventually(rejoined, 120, f"kafka-{node} back in every in-sync replica set")
        await traffic.until_accepted(100)
    assert not traffic.refused, traffic.refused
    await assert_nothing_lost(fault, traffic, predictions, [version], started=started)
    return traffic


async def test_kill_9_of_one_broker_refuses_nothing_and_loses_nothing(
    system: System, predictions: Predictions, drawings: list[bytes]
) -> None:
    controller = await asyncio.to_thread(active_controller)
    led = await leaders()
    node = next(n for n in NODES if n != controller and n in led)
    await lose_one_node(
        system, predictions, drawings, node, "kill -9 of one broker of three, restarted"
    )


async def test_kill_9_of_the_active_controller_refuses_nothing_and_loses_nothing(
    system: System, predictions: Predictions, drawings: list[bytes]
) -> None:
    controller = await asyncio.to_thread(active_controller)
    await lose_one_node(
        system, predictions, drawings, controller, "kill -9 of the active controller, restarted"
    )
    assert await asyncio.to_thread(active_controller) in NODES


async def test_two_brokers_down_refuses_quickly_and_recovers_by_itself(
    system: System, predictions: Predictions, drawings: list[bytes]
) -> None:
    started, version = time.monotonic(), await champion(system)
    lost = (2, 3)
    async with flowing(system.gateway_url, drawings, RATE) as traffic:
        for node in lost:
            await asyncio.to_thread(stack_component, "kill", f"kafka-{node}")
        await asyncio.sleep(DOWN_S)
        accepted_while_down = len(traffic.accepted)
        async with httpx.AsyncClient(base_url=system.gateway_url, timeout=60) as client:
            began = time.monotonic()
            refused = await client.post(
                "/api/predictions",
                files={"image": ("digit.png", drawing_png(SEVEN), "image/png")},
            )
            took = time.monotonic() - began
        assert refused.status_code == 503, refused.text
        assert took < 15, f"the 503 took {took:.1f} s"
        await asyncio.sleep(5)
        # Nothing the cluster cannot keep on two brokers was accepted while one was left.
        assert len(traffic.accepted) == accepted_while_down
        for node in lost:
            await asyncio.to_thread(stack_component, "start", f"kafka-{node}")
        await traffic.until_accepted(100, within=180)  # every service reconnected
    assert set(traffic.refused) == {"503"}, traffic.refused
    await assert_nothing_lost(
        "two brokers of three down about 30 s, restarted",
        traffic,
        predictions,
        [version],
        started=started,
    )
