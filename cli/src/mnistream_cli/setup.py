"""`mnistream setup`: create the topics, buckets and service users mnistream needs
(idempotent)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from mnistream_common.credentials import credentials_dir
from mnistream_common.kafka import TopicChange, ensure_topics
from mnistream_common.s3_users import ensure_s3_users
from mnistream_common.s3_users import ensure_user_files as ensure_s3_user_files
from mnistream_common.storage import ensure_buckets, make_minio

from mnistream_cli.kafka_users import ensure_kafka_users
from mnistream_cli.kafka_users import ensure_user_files as ensure_kafka_user_files
from mnistream_cli.settings import Settings


@dataclass(frozen=True)
class Provisioned:
    """What setup did."""

    topics: list[TopicChange]
    buckets_created: list[str]
    s3_users: dict[str, str]  # user: created, updated or unchanged
    kafka_users: dict[str, str] = field(default_factory=dict)  # likewise


def provision(
    settings: Settings, *, topics: bool = True, users: bool = True, kafka_users: bool = True
) -> Provisioned:
    """Create or align every topic of docs/design.md (unless something else owns them), create
    the missing buckets, and (unless told not to) give each service its own MinIO user
    (mnistream_common.s3_users) and its own Kafka user (mnistream_cli.kafka_users)."""
    changes = (
        asyncio.run(ensure_topics(settings, replication_factor=settings.kafka_replication_factor))
        if topics
        else []
    )
    buckets = [settings.drawings_bucket, settings.artifacts_bucket, settings.datasets_bucket]
    created = ensure_buckets(make_minio(settings), buckets)
    folder = credentials_dir(settings.mnistream_data)
    s3_done: dict[str, str] = {}
    if users:
        given = {
            "history": settings.history_s3_secret.get_secret_value(),
            "inference": settings.inference_s3_secret.get_secret_value(),
            "rescore": settings.rescore_s3_secret.get_secret_value(),
        }
        made = ensure_s3_user_files(folder, given)
        s3_done = ensure_s3_users(
            settings, made, settings.drawings_bucket, settings.artifacts_bucket
        )
    kafka_done: dict[str, str] = {}
    if kafka_users and settings.kafka_security_protocol != "PLAINTEXT":
        given = {
            "gateway": settings.gateway_kafka_secret.get_secret_value(),
            "history": settings.history_kafka_secret.get_secret_value(),
            "inference": settings.inference_kafka_secret.get_secret_value(),
            "rescore": settings.rescore_kafka_secret.get_secret_value(),
        }
        made_kafka = ensure_kafka_user_files(folder, given)
        kafka_done = ensure_kafka_users(settings, made_kafka.values())
    return Provisioned(changes, created, s3_done, kafka_done)
