"""Kafka plumbing shared by the services: the broker factory, topic provisioning, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import OutOfOrderSequenceNumber
from aiokafka.structs import OffsetAndMetadata
from faststream import BaseMiddleware
from faststream.exceptions import IncorrectState
from faststream.kafka import KafkaBroker
from faststream.security import (
    BaseSecurity,
    SASLPlaintext,
    SASLScram256,
    SASLScram512,
)

from mnistream_common import tracing
from mnistream_common.events import (
    DeadLetter,
    Event,
    InvalidEventError,
    LedgerEntry,
    LedgerRecords,
    ModelPromoted,
    Parser,
    utc_now,
)
from mnistream_common.logs import get_logger
from mnistream_common.settings import KafkaSettings
from mnistream_common.topics import ALL_TOPICS, MODEL_PROMOTED, TopicSpec

E = TypeVar("E", bound=Event)

# Headroom over the largest event (a 512 KB upload, base64-encoded, inside a dead letter).
MAX_REQUEST_BYTES = 3 * 1024 * 1024
# The largest original a dead letter carries whole: what every consumed topic accepts. Larger
# records (from before that limit) are cut so the letter still fits digits.deadletter (2 MiB).
MAX_DEAD_LETTER_ORIGINAL = 1024 * 1024

log = logging.getLogger(__name__)
_log = get_logger(__name__)


# Every producer of mnistream, the services' and the CLI's: a send counts only once every
# in-sync replica has it, and a retried send is never written twice.
DURABLE_PRODUCER: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "max_request_size": MAX_REQUEST_BYTES,
}
PUBLISH_TIMEOUT_S = 15.0
# Every consumer's fetch waits this long at the broker for records. The broker answers at once
# when records arrive, so a long wait costs no latency; a short one costs idle fetches (the
# default 500 ms made the idle stack's consumers Kafka's main work).
LONG_POLL_MS = 2000


def bootstrap_list(servers: str) -> list[str]:
    """`host:port,host:port` as a list: FastStream takes a string as one address (aiokafka
    itself splits it), so a broker given every node of a cluster could reach none of them."""
    return [address.strip() for address in servers.split(",") if address.strip()]


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """What every aiokafka client of mnistream is given: where Kafka is and who signs in."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap_list(kafka.kafka_bootstrap_servers),
        "security_protocol": kafka.kafka_security_protocol,
    }
    if kafka.kafka_security_protocol != "PLAINTEXT":
        options |= {
            "sasl_mechanism": kafka.kafka_sasl_mechanism,
            "sasl_plain_username": kafka.kafka_sasl_username,
            "sasl_plain_password": kafka.kafka_sasl_password.get_secret_value(),
        }
    if kafka.kafka_security_protocol == "SASL_SSL":
        options["ssl_context"] = ssl.create_default_context()
    return options


def broker_security(kafka: KafkaSettings) -> BaseSecurity | None:
    """The same sign-in, as FastStream's broker takes it (and writes it into AsyncAPI)."""
    if kafka.kafka_security_protocol == "PLAINTEXT":
        return None
    kind = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}
    return kind[kafka.kafka_sasl_mechanism](
        kafka.kafka_sasl_username,
        kafka.kafka_sasl_password.get_secret_value(),
        ssl_context=ssl.create_default_context()
        if kafka.kafka_security_protocol == "SASL_SSL"
        else None,
    )


def make_broker(settings: KafkaSettings, *, client_id: str, **kwargs: Any) -> KafkaBroker:
    """A FastStream Kafka broker whose producer is durable: acks=all and idempotent.

    It never creates topics: `mnistream setup` does, from topics.py. FastStream's own creation
    made a topic a service subscribed to before setup ran with one partition and no config
    (digits.erased did, on a stack upgraded while running), which setup then cannot repair.
    """
    broker = KafkaBroker(
        bootstrap_list(settings.kafka_bootstrap_servers),
        security=broker_security(settings),
        client_id=client_id,
        logger=logging.getLogger("mnistream.kafka"),
        allow_auto_create_topics=False,
        linger_ms=settings.kafka_linger_ms,
        **DURABLE_PRODUCER,
        **kwargs,
    )
    broker.add_middleware(_renewing_middleware(ProducerRenewal(broker)))
    return broker


class ProducerRenewal:
    """Replaces a broker's producer whose idempotence state is broken beyond repair.

    When a broker restart outlasts a batch's timeout, aiokafka (0.14) drops the unsent batch
    but keeps the sequence number it took, and from then on every send to that partition fails
    with OutOfOrderSequenceNumber: the service could never publish again. A new producer has a
    new producer id and fresh sequences. Whatever the old one held was never acknowledged, so
    its senders already saw a failure (a 503, or a redelivery of the consumed records).

    The replacement runs as a task of its own and tries again, with a pause doubling up to
    `max_pause_s`, until a producer starts: run inside the failed send, a caller's timeout once
    cancelled it between stopping the old producer and starting the new one, and the service
    was left with no producer at all (every later send: IncorrectState, a 503 for good).
    """

    def __init__(
        self, broker: KafkaBroker, *, first_pause_s: float = 0.5, max_pause_s: float = 10.0
    ) -> None:
        self._broker = broker
        self._pauses = (first_pause_s, max_pause_s)
        self._replacing: asyncio.Task[None] | None = None
        self.generation = 0

    def renew(self, failed_generation: int) -> None:
        """Start a new producer, unless one was started since `failed_generation`."""
        if failed_generation == self.generation and not self.replacing:
            self.generation += 1
            self._replacing = asyncio.create_task(self._replace(), name="producer-renewal")

    @property
    def replacing(self) -> bool:
        """Whether a new producer is being started."""
        return self._replacing is not None and not self._replacing.done()

    async def wait(self) -> None:
        """Until the new producer under way (if any) has started. A caller cancelled while it
        waits (its own timeout) leaves the replacement running."""
        if self._replacing is not None and not self._replacing.done():
            await asyncio.shield(self._replacing)

    async def _replace(self) -> None:
        _log.warning("Kafka producer out of sequence after an outage; starting a new one")
        pause, longest = self._pauses
        while True:
            with contextlib.suppress(Exception):  # the old one is broken; closing it may fail
                await self._broker.config.disconnect()
            try:
                await self._broker.config.connect(**self._broker._connection_kwargs)
            except Exception as exc:  # Kafka unreachable again, a timeout: try again
                _log.warning("a new Kafka producer did not start", error=repr(exc), retry_s=pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, longest)
            else:
                _log.info("new Kafka producer started")
                return


def _renewing_middleware(renewal: ProducerRenewal) -> Any:
    class RenewBrokenProducer(BaseMiddleware):
        async def publish_scope(self, call_next: Any, cmd: Any) -> Any:
            generation = renewal.generation
            try:
                return await call_next(cmd)
            except OutOfOrderSequenceNumber:
                renewal.renew(generation)
                await renewal.wait()
                raise  # this send failed; the caller's retry or redelivery uses the new one
            except IncorrectState:  # no producer (a new one is being started)
                await renewal.wait()
                raise

    return RenewBrokenProducer


@contextlib.asynccontextmanager
async def durable_producer(
    kafka: KafkaSettings, *, timeout_s: float = PUBLISH_TIMEOUT_S
) -> AsyncIterator[AIOKafkaProducer]:
    """A started durable producer for one-off sends (the CLI's promotions, replays, tasks)."""
    producer = AIOKafkaProducer(
        **client_options(kafka),
        request_timeout_ms=int(timeout_s * 1000),
        **DURABLE_PRODUCER,
    )
    try:
        await asyncio.wait_for(producer.start(), timeout_s)
        yield producer
    finally:
        await producer.stop()


async def publish_ledger(kafka: KafkaSettings, entry: LedgerEntry, model_name: str) -> int:
    """Append a record to the ledger (a promotion or a rollout step), keyed by the model name,
    and wait until Kafka has it (acks=all); its offset."""
    async with durable_producer(kafka) as producer:
        sent = await asyncio.wait_for(
            producer.send_and_wait(
                MODEL_PROMOTED.name,
                entry.to_bytes(),
                key=model_name.encode(),
                headers=tracing.kafka_headers(),  # the command's trace, when tracing is on
            ),
            PUBLISH_TIMEOUT_S,
        )
    return int(sent.offset)


async def read_ledger(kafka: KafkaSettings) -> list[ModelPromoted]:
    """Every valid promotion in the ledger, oldest first (invalid records are skipped:
    history-service dead-letters them; rollout steps are left out)."""
    entries = await read_ledger_entries(kafka)
    return [e for _, e in entries if isinstance(e, ModelPromoted)]


async def read_ledger_entries(kafka: KafkaSettings) -> list[tuple[int, LedgerEntry]]:
    """Every valid record of the ledger, promotions and rollout steps, oldest first, with its
    offset."""
    found = await read_topic_records(kafka, MODEL_PROMOTED, LedgerRecords)
    return [(offset, event) for _, offset, event in found]


async def promotions_end(kafka: KafkaSettings) -> int:
    """One past the offset of the ledger's newest promotion (0: none): what a newer promotion
    is judged by, since rollout steps follow promotions in the same ledger."""
    promotions = [o for o, e in await read_ledger_entries(kafka) if isinstance(e, ModelPromoted)]
    return promotions[-1] + 1 if promotions else 0


async def read_topic(kafka: KafkaSettings, spec: TopicSpec, event_type: Parser[E]) -> list[E]:
    """Every valid event of a topic up to its end offsets now, in each partition's order,
    partition by partition (invalid records and tombstones are skipped: the topic's group
    consumers dead-letter the first)."""
    return [e for _, _, e in await read_topic_records(kafka, spec, event_type)]


async def read_topic_records(
    kafka: KafkaSettings, spec: TopicSpec, event_type: Parser[E]
) -> list[tuple[int, int, E]]:
    """`read_topic`, each event with its partition and offset."""
    consumer = AIOKafkaConsumer(**client_options(kafka), enable_auto_commit=False)
    try:
        await consumer.start()
        partitions = [TopicPartition(spec.name, p) for p in range(spec.partitions)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        # An explicit seek: seek_to_beginning right after end_offsets left the position at
        # the end here (aiokafka 0.14), silently reading an empty ledger.
        for tp, offset in (await consumer.beginning_offsets(partitions)).items():
            consumer.seek(tp, offset)
        events: list[tuple[int, int, E]] = []
        for tp in partitions:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    with contextlib.suppress(InvalidEventError):
                        if record.value is not None:
                            event = event_type.from_bytes(record.value)
                            events.append((record.partition, record.offset, event))
        return events
    finally:
        await consumer.stop()


class KafkaProbe:
    """Whether Kafka answers now, for readiness probes.

    FastStream's `broker.ping` reuses one admin client; after a broker restart aiokafka (0.14)
    left that client's metadata stale for about a minute ("Broker id None not in current
    metadata"), so /readyz said Kafka was unreachable while it served every request. A probe
    that fails starts its next attempt on a new client.
    """

    def __init__(self, kafka: KafkaSettings) -> None:
        self._kafka = kafka
        self._admin: AIOKafkaAdminClient | None = None
        self._lock = asyncio.Lock()

    async def reachable(self, timeout_s: float = 2.0) -> bool:
        """Ask the cluster to describe itself within `timeout_s` (twice, on a new client)."""
        async with self._lock:
            for _ in range(2):
                try:
                    async with asyncio.timeout(timeout_s / 2):
                        if self._admin is None:
                            self._admin = AIOKafkaAdminClient(
                                **client_options(self._kafka),
                                client_id="mnistream-probe",
                            )
                            await self._admin.start()
                        await self._admin.describe_cluster()
                    return True
                except Exception:  # any failure: not reachable through this client
                    await self.close()
            return False

    async def close(self) -> None:
        """Close the admin client, if one is open."""
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()


@dataclass(frozen=True)
class TopicChange:
    """What provisioning did to one topic."""

    topic: str
    action: str  # "created", "updated", "unchanged"
    detail: str = ""


async def ensure_topics(
    kafka: KafkaSettings, specs: Iterable[TopicSpec] = ALL_TOPICS, *, replication_factor: int = 1
) -> list[TopicChange]:
    """Create missing topics (with `replication_factor` replicas) and align existing ones'
    configs; a second run changes nothing."""
    admin = AIOKafkaAdminClient(**client_options(kafka), client_id="mnistream-setup")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        changes: list[TopicChange] = []
        for spec in specs:
            if spec.name in existing:
                changes.append(await _align_topic(admin, spec))
            else:
                response = await admin.create_topics(
                    [
                        NewTopic(
                            spec.name,
                            spec.partitions,
                            replication_factor,
                            topic_configs=spec.config(),
                        )
                    ]
                )
                _raise_for_errors(f"creating topic {spec.name}", response.to_object())
                changes.append(TopicChange(spec.name, "created", f"{spec.partitions} partitions"))
        return changes
    finally:
        await admin.close()


async def _align_topic(admin: AIOKafkaAdminClient, spec: TopicSpec) -> TopicChange:
    described = await admin.describe_topics([spec.name])
    partitions = len(described[0]["partitions"])
    resource = ConfigResource(ConfigResourceType.TOPIC, spec.name)
    response = await admin.describe_configs([resource])
    current = {entry[0]: entry[1] for entry in response[0].resources[0][4]}
    wanted = spec.config()
    drift = {k: v for k, v in wanted.items() if current.get(k) != v}
    notes = []
    if partitions != spec.partitions:
        notes.append(f"has {partitions} partitions, design says {spec.partitions} (left as is)")
    if drift:
        responses = await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, spec.name, wanted)]
        )
        for response in responses:
            _raise_for_errors(f"configuring topic {spec.name}", response.to_object())
        notes.append("config set: " + ", ".join(f"{k}={v}" for k, v in drift.items()))
        return TopicChange(spec.name, "updated", "; ".join(notes))
    return TopicChange(spec.name, "unchanged", "; ".join(notes))


async def end_offsets(kafka: KafkaSettings, topic: TopicSpec) -> dict[int, int]:
    """The end offset of every partition of `topic` right now."""
    consumer = AIOKafkaConsumer(**client_options(kafka), enable_auto_commit=False)
    try:
        await consumer.start()
        partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        ends = await consumer.end_offsets(partitions)
        return {tp.partition: int(offset) for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def wait_for_group(
    kafka: KafkaSettings, group: str, topic: TopicSpec, within_s: float, poll_s: float = 0.5
) -> int:
    """Until `group` has committed, on every partition of `topic`, the end offset seen now (a
    group that commits after its effect has then handled every record written so far), or
    `within_s` has passed; the records it is still behind on (0: caught up). One admin client
    for the whole wait."""
    target = await end_offsets(kafka, topic)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    admin = AIOKafkaAdminClient(**client_options(kafka), client_id="mnistream")
    try:
        await admin.start()
        while True:
            committed = {
                tp.partition: int(meta.offset)
                for tp, meta in (await admin.list_consumer_group_offsets(group)).items()
                if tp.topic == topic.name
            }
            behind = sum(max(0, end - max(committed.get(p, -1), 0)) for p, end in target.items())
            if not behind or loop.time() >= deadline:
                return behind
            await asyncio.sleep(poll_s)
    finally:
        await admin.close()


async def rewind_group(
    kafka: KafkaSettings, group: str, topics: Iterable[TopicSpec], since: datetime | None
) -> dict[str, int]:
    """Commit `group`'s offsets at the beginning of `topics` (or at the first record at or after
    `since`); returns how many records each topic has for the group to read again.

    The group must have no active members: Kafka refuses commits from outside a live group
    (aiokafka raises CommitFailedError), so nothing is moved under a running consumer.
    """
    partitions = [TopicPartition(t.name, p) for t in topics for p in range(t.partitions)]
    consumer = AIOKafkaConsumer(**client_options(kafka), group_id=group, enable_auto_commit=False)
    try:
        await consumer.start()
        consumer.assign(partitions)
        beginnings = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        targets = {tp: int(beginnings[tp]) for tp in partitions}
        if since is not None:
            found = await consumer.offsets_for_times(
                {tp: int(since.timestamp() * 1000) for tp in partitions}
            )
            targets = {tp: int(found[tp].offset) if found.get(tp) else ends[tp] for tp in targets}
        await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in targets.items()})
    finally:
        await consumer.stop()
    records: dict[str, int] = {}
    for tp, offset in targets.items():
        records[tp.topic] = records.get(tp.topic, 0) + max(0, int(ends[tp]) - offset)
    return records


class TopicSetupError(RuntimeError):
    """Kafka refused to create or configure a topic."""


def _raise_for_errors(action: str, response: dict[str, Any]) -> None:
    """Kafka admin responses report failures as error codes inside a successful reply."""
    results = response.get("topic_errors") or response.get("topics") or response.get("resources")
    for result in results or []:
        code = result.get("error_code", 0)
        if code:
            message = result.get("error_message") or f"error code {code}"
            raise TopicSetupError(f"{action} failed: {message}")


def build_dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes,
    error: str,
    service: str,
    model_version: int | None = None,
    rollout_id: uuid.UUID | None = None,
    answered_by: int | None = None,
) -> DeadLetter:
    """The dead letter for a record that a consumer could not process (and, when a model failed
    on it, which version, in which rollout, and which version answered it instead)."""
    if len(value) > MAX_DEAD_LETTER_ORIGINAL:
        note = (
            f" [original cut to its first {MAX_DEAD_LETTER_ORIGINAL} of {len(value)} bytes; "
            f"the whole record is at {topic}/{partition}@{offset}]"
        )
        error, value = error[: 4000 - len(note)] + note, value[:MAX_DEAD_LETTER_ORIGINAL]
    return DeadLetter(
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        source_key=key,
        original=value,
        error=error[:4000],
        service=service,
        failed_at=utc_now(),
        model_version=model_version,
        rollout_id=rollout_id,
        answered_by=answered_by,
    )


class Record(Protocol):
    """The fields of a Kafka consumer record that mnistream reads (aiokafka's ConsumerRecord)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


async def send_to_dead_letter(
    publisher: Any,
    record: Record,
    error: str,
    service: str,
    *,
    model_version: int | None = None,
    rollout_id: uuid.UUID | None = None,
    answered_by: int | None = None,
) -> None:
    """Build, log and publish (acks=all) the dead letter of a consumer record."""
    letter = build_dead_letter(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value or b"",
        error=error,
        service=service,
        model_version=model_version,
        rollout_id=rollout_id,
        answered_by=answered_by,
    )
    _log.warning(
        "record sent to dead letter",
        digit_id=(record.key or b"").decode(errors="replace")[:64] or None,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        error=error,
        model_version=model_version,
        answered_by=answered_by,
    )
    await publisher.publish(letter.to_bytes(), key=record.key)
