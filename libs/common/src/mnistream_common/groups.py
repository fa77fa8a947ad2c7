"""Consumer groups as an operator sees them: members and lag (the CLI's status, the tests, the
bench)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from mnistream_common.kafka import client_options
from mnistream_common.settings import KafkaSettings
from mnistream_common.topics import GROUP_TOPICS


@dataclass(frozen=True)
class GroupStatus:
    """One consumer group: its state, members and lag per topic."""

    group: str
    state: str
    members: list[str]
    lag: dict[str, int]


async def group_status(kafka: KafkaSettings, groups: list[str]) -> list[GroupStatus]:
    """State, members (client id @ host) and lag of each group."""
    admin = AIOKafkaAdminClient(**client_options(kafka), client_id="mnistream-cli")
    consumer = AIOKafkaConsumer(**client_options(kafka), enable_auto_commit=False)
    try:
        await admin.start()
        await consumer.start()
        return [await _one(admin, consumer, group) for group in groups]
    finally:
        await consumer.stop()
        await admin.close()


async def _one(admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer, group: str) -> GroupStatus:
    # One group per request: aiokafka misreads multi-group DescribeGroups responses.
    [response] = await admin.describe_consumer_groups([group])
    described: dict[str, Any] = response.to_object()["groups"][0]
    members = [f"{m['client_id']}@{m['client_host'].lstrip('/')}" for m in described["members"]]
    committed = {
        TopicPartition(tp.topic, tp.partition): meta.offset
        for tp, meta in (await admin.list_consumer_group_offsets(group)).items()
    }
    # Partitions the group reads but has never committed on count from their beginning: the
    # consumers start there (auto_offset_reset=earliest), so that is how far behind they are.
    partitions = set(committed) | {
        TopicPartition(t.name, p) for t in GROUP_TOPICS.get(group, ()) for p in range(t.partitions)
    }
    lag: dict[str, int] = {}
    if partitions:
        ends = await consumer.end_offsets(list(partitions))
        starts = await consumer.beginning_offsets(list(partitions))
        for tp in partitions:
            position = committed.get(tp, -1)
            behind = max(0, ends[tp] - (position if position >= 0 else starts[tp]))
            lag[tp.topic] = lag.get(tp.topic, 0) + behind
    return GroupStatus(group, str(described["state"]), members, lag)


async def group_lag(kafka: KafkaSettings, group: str) -> int:
    """Records `group` has still to read, over all its topics."""
    [status] = await group_status(kafka, [group])
    return sum(status.lag.values())
