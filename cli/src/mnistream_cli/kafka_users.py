"""Each service's own Kafka user (SASL/SCRAM-SHA-512), allowed only its own topics and groups.

- `mnistream-gateway` writes digits.submitted and digits.labeled, and reads digits.predicted and
  model.promoted with no group (every instance reads everything).
- `mnistream-inference` reads digits.submitted (group inference) and model.promoted, and writes
  digits.predicted and digits.deadletter.
- `mnistream-history` reads its seven topics (group history), and writes digits.deadletter,
  digits.erased and tombstones on digits.submitted (erasures), and model.promoted (its guardrails
  abort rollouts).
- `mnistream-rescore` reads model.promoted (group rescore-planner) and rescore.tasks (group
  rescore), and writes rescore.tasks, digits.predicted, rescore.skipped and digits.deadletter;
  its planner may also see digits.submitted's end offsets and group history's commits (it waits
  for history-service to store what was submitted before a promotion).

The operator (`mnistream` and the trainer) signs in as the cluster's super user, which is also
the one brokers use between themselves. Only the operator and history-service may write the
ledger (history-service for its guardrails' aborts; the broker cannot tell an abort from a
promotion, so its credentials could append either). A promotion published with the gateway's or
a worker's credentials is refused by the broker (TopicAuthorizationFailed), and one whose model
the MLflow registry does not hold with that sha256 is refused by every worker.

The secrets: `<SERVICE>_KAFKA_SECRET` of setup's settings where it is set (compose sets them),
otherwise random, made once and kept beside the MinIO secrets (mnistream_common.credentials).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from mnistream_common.credentials import service_secret, store_settings
from mnistream_common.settings import KafkaSettings
from mnistream_common.topics import (
    DIGITS_DEADLETTER,
    DIGITS_ERASED,
    DIGITS_LABELED,
    DIGITS_PREDICTED,
    DIGITS_SUBMITTED,
    HISTORY_TOPICS,
    MODEL_PROMOTED,
    RESCORE_SKIPPED,
    RESCORE_TASKS,
    Groups,
    TopicSpec,
)

MECHANISM = "SCRAM-SHA-512"
# Kafka's minimum (and its tools' default). Each connection a service opens pays for it on both
# sides: about 10 ms of a core here for a one-off producer (the operator's PLAIN costs nothing).
SCRAM_ITERATIONS = 4096
TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Grants:
    """What one service may do on Kafka."""

    read: tuple[TopicSpec, ...] = ()
    write: tuple[TopicSpec, ...] = ()
    describe: tuple[TopicSpec, ...] = ()  # its end offsets only
    groups: tuple[str, ...] = ()  # consumer groups it reads in (and commits)
    describe_groups: tuple[str, ...] = ()  # groups whose commits it may see


GRANTS: dict[str, Grants] = {
    "gateway": Grants(
        read=(DIGITS_PREDICTED, MODEL_PROMOTED), write=(DIGITS_SUBMITTED, DIGITS_LABELED)
    ),
    "inference": Grants(
        read=(DIGITS_SUBMITTED, MODEL_PROMOTED),
        write=(DIGITS_PREDICTED, DIGITS_DEADLETTER),
        groups=(Groups.INFERENCE,),
    ),
    "history": Grants(
        read=HISTORY_TOPICS,
        write=(DIGITS_DEADLETTER, DIGITS_ERASED, DIGITS_SUBMITTED, MODEL_PROMOTED),
        groups=(Groups.HISTORY,),
    ),
    "rescore": Grants(
        read=(MODEL_PROMOTED, RESCORE_TASKS),
        write=(RESCORE_TASKS, DIGITS_PREDICTED, RESCORE_SKIPPED, DIGITS_DEADLETTER),
        describe=(DIGITS_SUBMITTED,),
        groups=(Groups.RESCORE, Groups.RESCORE_PLANNER),
        describe_groups=(Groups.HISTORY,),
    ),
}
SERVICES = tuple(GRANTS)


@dataclass(frozen=True)
class KafkaUser:
    """One service's Kafka user name and password."""

    service: str
    password: str

    @property
    def name(self) -> str:
        """The user's name, and so its principal `User:<name>`."""
        return f"mnistream-{self.service}"

    def env(self) -> dict[str, str]:
        """The settings that make a service sign in as this user."""
        return {
            "KAFKA_SASL_MECHANISM": MECHANISM,
            "KAFKA_SASL_USERNAME": self.name,
            "KAFKA_SASL_PASSWORD": self.password,
        }


def acls(user: str, grants: Grants) -> set[AclBinding]:
    """The ACLs (all ALLOW, from any host, on literal names) that give `user` its grants."""
    wanted = [
        *((ResourceType.TOPIC, t.name, AclOperation.READ) for t in grants.read),
        *((ResourceType.TOPIC, t.name, AclOperation.WRITE) for t in grants.write),
        *((ResourceType.TOPIC, t.name, AclOperation.DESCRIBE) for t in grants.describe),
        *((ResourceType.GROUP, g, AclOperation.READ) for g in grants.groups),
        *((ResourceType.GROUP, g, AclOperation.DESCRIBE) for g in grants.describe_groups),
    ]
    return {
        AclBinding(
            kind,
            name,
            ResourcePatternType.LITERAL,
            f"User:{user}",
            "*",
            operation,
            AclPermissionType.ALLOW,
        )
        for kind, name, operation in wanted
    }


def ensure_user_files(folder: Path, given: Mapping[str, str]) -> dict[str, KafkaUser]:
    """Every service's user, its password the one `given` for it (non-empty), else the one in
    its file, else new and random; kept in the service's credentials file."""
    users = {}
    for service in SERVICES:
        password = service_secret(folder, service, "KAFKA_SASL_PASSWORD", given.get(service, ""))
        users[service] = user = KafkaUser(service, password)
        store_settings(folder, service, user.env())
    return users


def librdkafka_config(settings: KafkaSettings) -> dict[str, Any]:
    """The same sign-in as `settings`, in librdkafka's words (confluent_kafka's clients)."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "security.protocol": settings.kafka_security_protocol,
        "client.id": "mnistream-setup",
    }
    if settings.kafka_security_protocol != "PLAINTEXT":
        config |= {
            "sasl.mechanism": settings.kafka_sasl_mechanism,
            "sasl.username": settings.kafka_sasl_username,
            "sasl.password": settings.kafka_sasl_password.get_secret_value(),
        }
    return config


def ensure_kafka_users(settings: KafkaSettings, users: Iterable[KafkaUser]) -> dict[str, str]:
    """Create or update every service's SCRAM credential and ACLs, signed in as the operator.
    Returns what became of each user: created, updated (its ACLs differed, and now match) or
    unchanged; its password is set to the given one every time (Kafka does not show it)."""
    admin = AdminClient(librdkafka_config(settings))
    users = list(users)
    existing = _scram_users(admin, [u.name for u in users])
    done = {}
    for user in users:
        upsert = UserScramCredentialUpsertion(
            user.name,
            ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
            user.password.encode(),
        )
        _wait(admin.alter_user_scram_credentials([upsert]).values())
        changed = _align_acls(admin, user.name, acls(user.name, GRANTS[user.service]))
        done[user.name] = (
            "created" if user.name not in existing else "updated" if changed else "unchanged"
        )
    return done


def _scram_users(admin: AdminClient, names: list[str]) -> set[str]:
    found = set()
    described = admin.describe_user_scram_credentials(names)
    assert isinstance(described, dict)  # one future per user when users are named
    for name, future in described.items():
        try:
            future.result(timeout=TIMEOUT_S)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.RESOURCE_NOT_FOUND:
                raise
        else:
            found.add(name)
    return found


def _align_acls(admin: AdminClient, user: str, wanted: set[AclBinding]) -> bool:
    """Make `user`'s ACLs exactly `wanted`; whether anything changed."""
    mine = AclBindingFilter(
        ResourceType.ANY,
        None,  # type: ignore[arg-type]  # None matches any name and any host
        ResourcePatternType.ANY,
        f"User:{user}",
        None,  # type: ignore[arg-type]
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    current = set(admin.describe_acls(mine, request_timeout=TIMEOUT_S).result(timeout=TIMEOUT_S))
    missing, extra = wanted - current, current - wanted
    if missing:
        _wait(admin.create_acls(list(missing), request_timeout=TIMEOUT_S).values())
    if extra:
        filters = [
            AclBindingFilter(
                b.restype,
                b.name,
                b.resource_pattern_type,
                b.principal,
                b.host,
                b.operation,
                b.permission_type,
            )
            for b in extra
        ]
        _wait(admin.delete_acls(filters, request_timeout=TIMEOUT_S).values())
    return bool(missing or extra)


def _wait(futures: Iterable[Future[Any]]) -> None:
    for future in futures:
        future.result(timeout=TIMEOUT_S)
