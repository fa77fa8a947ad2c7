"""Each service's Kafka user, as `mnistream setup` made it on the test stack: the broker lets it
do its own part and refuses the rest. Above all, a promotion published with a service's
credentials is refused by the broker (only the operator, and history-service's guardrails, write
the ledger). Fails when Kafka is down or the stack was set up without Kafka users."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)
from mnistream_cli.kafka_users import GRANTS
from mnistream_common.credentials import credentials_dir, stored_settings
from mnistream_common.kafka import client_options, end_offsets, wait_for_group
from mnistream_common.settings import KafkaSettings
from mnistream_common.topics import DIGITS_SUBMITTED, MODEL_PROMOTED, Groups, topic_for
from pydantic import SecretStr

from tests.helpers import promotion
from tests.system import ROOT

pytestmark = pytest.mark.integration


def signed_in_as(kafka: KafkaSettings, service: str) -> KafkaSettings:
    """The operator's settings, signed in as `service` with the password setup gave it."""
    folder = credentials_dir(Path(os.environ.get("MNISTREAM_DATA", ROOT / ".data")))
    path = folder / f"{service}.env"
    assert path.exists(), f"{path} is missing: the stack was set up without service users"
    assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    env = stored_settings(folder, service)
    assert "KAFKA_SASL_PASSWORD" in env, f"{path} has no Kafka user: run `mnistream setup`"
    return kafka.model_copy(
        update={
            "kafka_sasl_mechanism": env["KAFKA_SASL_MECHANISM"],
            "kafka_sasl_username": env["KAFKA_SASL_USERNAME"],
            "kafka_sasl_password": SecretStr(env["KAFKA_SASL_PASSWORD"]),
        }
    )


async def publish(kafka: KafkaSettings, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(**client_options(kafka), acks="all", request_timeout_ms=10_000)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"kafka-users-test")
    finally:
        await producer.stop()


@pytest.mark.parametrize("service", ["gateway", "inference", "rescore"])
async def test_a_promotion_published_with_a_services_credentials_is_refused_by_the_broker(
    kafka: KafkaSettings, service: str
) -> None:
    forged = promotion(b"a forger's model", version=999)
    ledger_end = (await end_offsets(kafka, MODEL_PROMOTED))[0]
    with pytest.raises(TopicAuthorizationFailedError):
        await publish(signed_in_as(kafka, service), MODEL_PROMOTED.name, forged.to_bytes())
    assert (await end_offsets(kafka, MODEL_PROMOTED))[0] == ledger_end  # nothing was appended


@pytest.mark.parametrize(
    ("service", "topic"),
    [
        ("gateway", "digits.predicted"),
        ("inference", "digits.labeled"),
        ("rescore", "digits.submitted"),
        ("history", "rescore.tasks"),
    ],
)
async def test_a_service_cannot_write_another_services_topic(
    kafka: KafkaSettings, service: str, topic: str
) -> None:
    assert topic_for(topic) not in GRANTS[service].write
    with pytest.raises(TopicAuthorizationFailedError):
        await publish(signed_in_as(kafka, service), topic, b"{}")


@pytest.mark.parametrize(
    ("service", "group", "topic"),
    [
        ("gateway", Groups.INFERENCE, "digits.predicted"),
        ("inference", Groups.HISTORY, "digits.submitted"),
        ("history", Groups.RESCORE, "digits.labeled"),
    ],
)
async def test_a_service_cannot_consume_in_another_services_group(
    kafka: KafkaSettings, service: str, group: str, topic: str
) -> None:
    """On a topic the service reads, so what is refused is the group."""
    assert topic_for(topic) in GRANTS[service].read and group not in GRANTS[service].groups
    consumer = AIOKafkaConsumer(
        topic, **client_options(signed_in_as(kafka, service)), group_id=group
    )
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            await consumer.start()
    finally:
        await consumer.stop()


@pytest.mark.parametrize(
    ("service", "topic"),
    [
        ("inference", "digits.labeled"),
        ("gateway", "rescore.tasks"),
        ("rescore", "digits.erased"),
        ("history", "rescore.tasks"),
    ],
)
async def test_a_service_cannot_read_another_services_topic(
    kafka: KafkaSettings, service: str, topic: str
) -> None:
    """A topic the service has no part in: Kafka does not even describe it to the service."""
    grants = GRANTS[service]
    assert topic_for(topic) not in (*grants.read, *grants.write, *grants.describe)
    consumer = AIOKafkaConsumer(topic, **client_options(signed_in_as(kafka, service)))
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await consumer.start()
    finally:
        await consumer.stop()


async def test_a_service_reads_its_own_topics_and_groups(kafka: KafkaSettings) -> None:
    """The refusals above are the ACLs', not a user that can do nothing: each service sees its
    topics' end offsets and its groups' commits (without joining them: the running workers
    would rebalance), and the rescore planner the history group's, which it waits on."""
    for service, grants in GRANTS.items():
        user = signed_in_as(kafka, service)
        for topic in (*grants.read, *grants.describe):
            assert len(await end_offsets(user, topic)) == topic.partitions, (service, topic.name)
        for group in (*grants.groups, *grants.describe_groups):
            await committed_offsets(user, group)
    # The planner's wait: GroupAuthorizationFailedError without Describe on group history (the
    # planner itself only logs a failed wait, so a lost grant would go unseen there).
    await wait_for_group(signed_in_as(kafka, "rescore"), Groups.HISTORY, DIGITS_SUBMITTED, 0.1)


async def test_a_service_cannot_see_another_services_group_commits(kafka: KafkaSettings) -> None:
    with pytest.raises(GroupAuthorizationFailedError):
        await committed_offsets(signed_in_as(kafka, "gateway"), Groups.HISTORY)


async def committed_offsets(kafka: KafkaSettings, group: str) -> int:
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        return len(await admin.list_consumer_group_offsets(group))
    finally:
        await admin.close()


async def test_a_wrong_password_is_refused(kafka: KafkaSettings) -> None:
    wrong = signed_in_as(kafka, "gateway").model_copy(
        update={"kafka_sasl_password": SecretStr("not-the-password")}
    )
    with pytest.raises(KafkaConnectionError):
        await publish(wrong, "digits.submitted", b"{}")
