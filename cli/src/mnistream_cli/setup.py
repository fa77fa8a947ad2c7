"""`mnistream setup`: create the topics, buckets and service users mnistream needs
(idempotent)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mnistream_common.kafka import TopicChange, ensure_topics
from mnistream_common.s3_users import credentials_dir, ensure_s3_users, ensure_user_files
from mnistream_common.storage import ensure_buckets, make_minio

from mnistream_cli.settings import Settings


@dataclass(frozen=True)
class Provisioned:
    """What setup did."""

    topics: list[TopicChange]
    buckets_created: list[str]
    s3_users: dict[str, str]  # user: created, updated or unchanged


def provision(settings: Settings, *, topics: bool = True, users: bool = True) -> Provisioned:
    """Create or align every topic of docs/design.md (unless something else owns them), create
    the missing buckets, and (unless told not to) give each service its own MinIO user
    (mnistream_common.s3_users)."""
    changes = (
        asyncio.run(
            ensure_topics(
                settings.kafka_bootstrap_servers,
                replication_factor=settings.kafka_replication_factor,
            )
        )
        if topics
        else []
    )
    buckets = [settings.drawings_bucket, settings.artifacts_bucket]
    created = ensure_buckets(make_minio(settings), buckets)
    given = {
        "history": settings.history_s3_secret.get_secret_value(),
        "inference": settings.inference_s3_secret.get_secret_value(),
        "rescore": settings.rescore_s3_secret.get_secret_value(),
    }
    if not users:
        return Provisioned(changes, created, {})
    made = ensure_user_files(credentials_dir(settings.mnistream_data), given)
    names = ensure_s3_users(settings, made, settings.drawings_bucket, settings.artifacts_bucket)
    return Provisioned(changes, created, names)
