"""Each service's Kafka user: its grants follow the topics' producers and consumers of topics.py,
its ACLs are exactly those grants, and its password is kept across setups."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from confluent_kafka.admin import AclOperation, ResourceType
from mnistream_cli.kafka_users import GRANTS, SERVICES, acls, ensure_user_files
from mnistream_common.credentials import store_settings, stored_settings
from mnistream_common.topics import ALL_TOPICS, GROUP_TOPICS

# How topics.py names each service in a topic's producers and consumers.
NAMED = {
    "gateway": "gateway",
    "inference": "inference-worker",
    "history": "history-service",
    "rescore": "rescore-worker",
}


def named(service: str, parties: tuple[str, ...]) -> bool:
    return any(re.match(rf"{NAMED[service]}\b", party) for party in parties)


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_writes_and_reads_the_topics_that_name_it_and_no_other(service: str) -> None:
    grants = GRANTS[service]
    writes = {t.name for t in ALL_TOPICS if named(service, t.producers)}
    reads = {t.name for t in ALL_TOPICS if named(service, t.consumers)}
    assert {t.name for t in grants.write} == writes
    assert {t.name for t in grants.read} == reads


def test_each_group_is_read_by_the_one_service_that_consumes_in_it() -> None:
    for group, topics in GROUP_TOPICS.items():
        readers = [s for s, g in GRANTS.items() if group in g.groups]
        assert len(readers) == 1, group
        assert {t.name for t in topics} <= {t.name for t in GRANTS[readers[0]].read}, group


def test_only_the_operator_and_the_guardrails_write_the_ledger() -> None:
    writers = [s for s, g in GRANTS.items() if any(t.name == "model.promoted" for t in g.write)]
    assert writers == ["history"]


def test_the_acls_are_the_grants_and_nothing_wider() -> None:
    bindings = acls("mnistream-rescore", GRANTS["rescore"])
    seen = {(b.restype, b.name, b.operation) for b in bindings}
    assert (ResourceType.TOPIC, "rescore.tasks", AclOperation.READ) in seen
    assert (ResourceType.TOPIC, "digits.submitted", AclOperation.DESCRIBE) in seen
    assert (ResourceType.GROUP, "history", AclOperation.DESCRIBE) in seen
    assert (ResourceType.GROUP, "rescore-planner", AclOperation.READ) in seen
    assert not any(b.operation == AclOperation.ALL or b.name == "*" for b in bindings)
    assert {b.principal for b in bindings} == {"User:mnistream-rescore"}
    assert {b.host for b in bindings} == {"*"}
    assert len(bindings) == 2 + 2 + 4 + 1 + 1  # reads, groups, writes, describes


def test_passwords_are_kept_across_setups_and_a_given_one_wins(tmp_path: Path) -> None:
    store_settings(tmp_path, "history", {"S3_SECRET_ACCESS_KEY": "minio's"})
    first = ensure_user_files(tmp_path, {})
    again = ensure_user_files(tmp_path, {})
    assert {s: u.password for s, u in first.items()} == {s: u.password for s, u in again.items()}
    assert len({u.password for u in first.values()}) == len(SERVICES)

    given = ensure_user_files(tmp_path, {"gateway": "from-compose-123"})
    assert given["gateway"].password == "from-compose-123"
    assert given["inference"].password == first["inference"].password
    history = stored_settings(tmp_path, "history")
    assert history["S3_SECRET_ACCESS_KEY"] == "minio's"  # the MinIO secret stays beside it
    assert history["KAFKA_SASL_USERNAME"] == "mnistream-history"
    assert history["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert stat.S_IMODE((tmp_path / "history.env").stat().st_mode) == 0o600
