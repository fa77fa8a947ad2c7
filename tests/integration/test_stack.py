"""The local stack is the real thing: Kafka groups share partitions, the project's topics are as
designed, Postgres keeps what is committed, MinIO returns the bytes it was given, and an MLflow
model version's artifact lands in MinIO. Fails (never skips) when a component is down."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from mnistream_cli.kafka_users import SERVICES as KAFKA_SERVICES
from mnistream_cli.kafka_users import KafkaUser
from mnistream_common.events import DigitLabeled, ModelRef, ModelRollout, utc_now
from mnistream_common.kafka import (
    KafkaProbe,
    client_options,
    durable_producer,
    promotions_end,
    read_ledger_entries,
)
from mnistream_common.s3_users import SERVICES, S3User
from mnistream_common.settings import KafkaSettings, S3Settings
from mnistream_common.storage import ObjectStore, S3Uri, make_minio
from mnistream_common.topics import ALL_TOPICS, MODEL_PROMOTED
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.polling import eventually

pytestmark = pytest.mark.integration

MESSAGES = 120
PARTITIONS = 12

# ---------------------------------------------------------------- Kafka


@pytest.fixture
async def admin(kafka: KafkaSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    """A Kafka admin client."""
    client = AIOKafkaAdminClient(**client_options(kafka))
    await client.start()
    yield client
    await client.close()


@pytest.fixture
async def throwaway_topic(admin: AIOKafkaAdminClient) -> AsyncIterator[str]:
    """A fresh 12-partition topic, deleted afterwards."""
    name = f"it-stack-{uuid.uuid4().hex}"
    response = await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    assert [error for _, error, *_ in response.topic_errors] == [0], response
    yield name
    await admin.delete_topics([name])


async def produce_labels(servers: KafkaSettings, topic: str) -> dict[uuid.UUID, DigitLabeled]:
    """Publish MESSAGES labels keyed by digit id, durably; returns them by event id."""
    producer = AIOKafkaProducer(**client_options(servers), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        events = [
            DigitLabeled(digit_id=uuid.uuid4(), label=i % 10, labeled_at=utc_now())
            for i in range(MESSAGES)
        ]
        sends = [
            await producer.send(topic, e.to_bytes(), key=str(e.digit_id).encode()) for e in events
        ]
        await asyncio.gather(*sends)
        return {e.event_id: e for e in events}
    finally:
        await producer.stop()


def consumer(servers: KafkaSettings, topic: str, group: str) -> AIOKafkaConsumer:
    """A group member reading from the beginning, committing nothing (so nothing is skipped)."""
    return AIOKafkaConsumer(
        topic,
        **client_options(servers),
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        heartbeat_interval_ms=300,
    )


async def poll(member: AIOKafkaConsumer, into: list[DigitLabeled]) -> None:
    """Read what is there now, checking each record's key is its digit id."""
    batches = await member.getmany(timeout_ms=100)
    for records in batches.values():
        for record in records:
            event = DigitLabeled.from_bytes(record.value)
            assert record.key == str(event.digit_id).encode()
            into.append(event)


async def read_until(members: list[AIOKafkaConsumer], count: int) -> list[list[DigitLabeled]]:
    """What each member read, once together they read `count` records."""
    received: list[list[DigitLabeled]] = [[] for _ in members]

    async def all_read() -> bool:
        await asyncio.gather(*(poll(m, r) for m, r in zip(members, received, strict=True)))
        return sum(map(len, received)) >= count

    await eventually(all_read, 30, f"{count} records read")
    await all_read()  # one more round: a duplicate would show up here
    return received


async def wait_for_shared_assignment(members: list[AIOKafkaConsumer]) -> None:
    """Until every member holds some partitions and together they hold each exactly once."""

    async def shared() -> bool:
        owned = [m.assignment() for m in members]
        together = [tp.partition for tps in owned for tp in tps]
        return all(owned) and sorted(together) == list(range(PARTITIONS))

    await eventually(shared, 30, "the group shares the 12 partitions")


async def test_one_group_shares_partitions_and_another_group_sees_everything(
    kafka: KafkaSettings, throwaway_topic: str
) -> None:
    group = f"it-stack-{uuid.uuid4().hex}"
    members = [consumer(kafka, throwaway_topic, group) for _ in range(2)]
    other = consumer(kafka, throwaway_topic, f"{group}-other")
    for member in [*members, other]:
        await member.start()
    try:
        await wait_for_shared_assignment(members)
        sent = await produce_labels(kafka, throwaway_topic)
        first, second = await read_until(members, MESSAGES)
        [everything] = await read_until([other], MESSAGES)
    finally:
        await asyncio.gather(*(m.stop() for m in [*members, other]))
    assert first, "the first member of the group got nothing"
    assert second, "the second member of the group got nothing"
    assert sorted(e.event_id for e in first + second) == sorted(sent)
    assert {e.event_id: e for e in everything} == sent
    assert len(everything) == MESSAGES


async def test_the_project_topics_have_the_designed_partitions_and_retention(
    admin: AIOKafkaAdminClient,
) -> None:
    described = await admin.describe_topics([spec.name for spec in ALL_TOPICS])
    partitions = {topic["topic"]: len(topic["partitions"]) for topic in described}
    for spec in ALL_TOPICS:
        assert partitions.get(spec.name) == spec.partitions, f"{spec.name} partitions"
        config = await topic_config(admin, spec.name)
        for key, value in spec.config().items():
            assert config.get(key) == value, f"{spec.name}: {key}"


async def topic_config(admin: AIOKafkaAdminClient, topic: str) -> dict[str, Any]:
    """A topic's effective configuration."""
    response = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    return {entry[0]: entry[1] for entry in response[0].resources[0][4]}


async def test_a_rollout_step_does_not_count_as_a_newer_promotion(
    kafka: KafkaSettings,
) -> None:
    """The rescore planner skips a promotion only for a newer promotion: a rollout step after
    it (here an abort of no running rollout, which every reader ignores) must not count."""
    step = ModelRollout(
        rollout_id=uuid.uuid4(),
        action="aborted",
        mode="shadow",
        candidate=ModelRef(name="mnist-digits", version=1, sha256="ab" * 32),
        onnx_uri="s3://mlflow/none.onnx",
        architecture="linear",
        champion_version=1,
        percent=100.0,
        requested_by="integration tests",
        reason="a step no reader applies",
    )
    async with durable_producer(kafka) as producer:
        sent = await producer.send_and_wait(
            MODEL_PROMOTED.name, step.to_bytes(), key=b"mnist-digits"
        )

    assert await promotions_end(kafka) <= sent.offset
    entries = await read_ledger_entries(kafka)
    assert (sent.offset, step) in entries


async def test_the_readiness_probe_tells_a_live_kafka_from_a_dead_port(
    kafka: KafkaSettings,
) -> None:
    live, dead = KafkaProbe(kafka), KafkaProbe(KafkaSettings(kafka_bootstrap_servers="127.0.0.1:1"))
    try:
        assert await live.reachable()
        assert await live.reachable(), "the second probe reuses the client"
        assert not await dead.reachable(timeout_s=1.0)
    finally:
        await live.close()
        await dead.close()


def test_setup_is_idempotent(kafka: KafkaSettings, s3_settings: S3Settings) -> None:
    mnistream = Path(sys.executable).with_name("mnistream")
    subprocess.run([mnistream, "setup"], check=True, capture_output=True, timeout=60)
    second = subprocess.run(
        [mnistream, "setup"], check=True, capture_output=True, text=True, timeout=60
    )
    actions = {line.split()[1]: line.split()[2] for line in second.stdout.splitlines()}
    buckets = [s3_settings.drawings_bucket, s3_settings.artifacts_bucket, "datasets"]
    users = [S3User(service, "").access_key for service in SERVICES]
    kafka_users = [KafkaUser(service, "").name for service in KAFKA_SERVICES]
    expected = [t.name for t in ALL_TOPICS] + buckets + users + kafka_users
    assert actions == dict.fromkeys(expected, "unchanged"), second.stdout


# ---------------------------------------------------------------- Postgres


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the application database."""
    created = create_async_engine(database_url)
    yield created
    await created.dispose()


async def test_postgres_keeps_what_was_committed(engine: AsyncEngine) -> None:
    table = f"it_stack_{uuid.uuid4().hex}"
    rows = [{"id": uuid.uuid4(), "label": i, "image": os.urandom(64)} for i in range(10)]
    async with engine.begin() as conn:
        await conn.execute(
            text(f"CREATE TABLE {table} (id uuid PRIMARY KEY, label int, image bytea)")
        )
        await conn.execute(text(f"INSERT INTO {table} VALUES (:id, :label, :image)"), rows)
    try:
        async with engine.connect() as other:  # another connection sees the commit
            result = await other.execute(
                text(f"SELECT id, label, image FROM {table} ORDER BY label")
            )
            assert [dict(row._mapping) for row in result] == rows
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP TABLE {table}"))


# ---------------------------------------------------------------- MinIO


async def test_minio_returns_the_bytes_it_was_given(s3_settings: S3Settings) -> None:
    client = make_minio(s3_settings)
    store = ObjectStore(client)
    uri = S3Uri(s3_settings.drawings_bucket, f"it-stack/{uuid.uuid4()}.png")
    data = os.urandom(300_000)
    await store.put(uri, data, "image/png")
    try:
        assert await store.exists(uri)
        assert await store.get(uri) == data
    finally:
        await asyncio.to_thread(client.remove_object, uri.bucket, uri.key)
    assert not await store.exists(uri)


async def test_many_objects_in_one_request_each_read_back_alone(s3_settings: S3Settings) -> None:
    client = make_minio(s3_settings)
    store = ObjectStore(client)
    folder = f"it-stack-many/{uuid.uuid4()}"
    objects = [(f"{folder}/{i}", os.urandom(1000 + i)) for i in range(50)]

    await store.put_many(s3_settings.drawings_bucket, objects)

    try:
        for key, data in objects:
            assert await store.get(S3Uri(s3_settings.drawings_bucket, key)) == data
        listed = list(client.list_objects(s3_settings.drawings_bucket, f"{folder}/", True))
        assert len(listed) == 50, "the archive itself is not kept as an object"
    finally:
        for key, _ in objects:
            await asyncio.to_thread(client.remove_object, s3_settings.drawings_bucket, key)


# ---------------------------------------------------------------- MLflow


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    """A valid ONNX model (y = x) saved as model.onnx."""
    import onnx
    from onnx import TensorProto, helper

    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 10]) for n in "xy")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "it", [x], [y])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), path)
    return path


class Experiment(NamedTuple):
    """An MLflow client and the id of an experiment to log into."""

    client: Any
    experiment_id: str


@pytest.fixture
def experiment(mlflow_tracking_uri: str) -> Iterator[Experiment]:
    """A throwaway MLflow experiment (deleted afterwards)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_tracking_uri)
    experiment_id = client.create_experiment(f"it-stack-{uuid.uuid4().hex}")
    yield Experiment(client, experiment_id)
    client.delete_experiment(experiment_id)


def test_a_registered_model_version_lands_in_minio(
    experiment: Experiment, tiny_onnx: Path, s3_settings: S3Settings
) -> None:
    client = experiment.client
    run = client.create_run(experiment.experiment_id).info
    client.log_metric(run.run_id, "accuracy", 0.5)
    client.log_artifact(run.run_id, str(tiny_onnx), artifact_path="model")
    client.set_terminated(run.run_id)
    name = f"it-stack-{uuid.uuid4().hex}"
    client.create_registered_model(name)
    try:
        source = f"{run.artifact_uri}/model"
        version = client.create_model_version(name, source, run_id=run.run_id).version
        assert client.get_model_version(name, version).status == "READY"
        assert client.get_model_version_download_uri(name, version) == source
        assert artifact_in_minio(s3_settings, f"{source}/model.onnx") == tiny_onnx.read_bytes()
    finally:
        client.delete_registered_model(name)


def artifact_in_minio(settings: S3Settings, artifact_uri: str) -> bytes:
    """The bytes MinIO holds for a proxied MLflow artifact (`mlflow-artifacts:/<path>`)."""
    scheme = "mlflow-artifacts:"
    assert artifact_uri.startswith(scheme), f"artifacts are not proxied: {artifact_uri}"
    key = artifact_uri.removeprefix(scheme).lstrip("/")
    response = make_minio(settings).get_object(settings.artifacts_bucket, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()
