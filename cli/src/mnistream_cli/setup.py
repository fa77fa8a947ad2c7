"""`mnistream setup`: create the topics and buckets mnistream needs (idempotent)."""

from __future__ import annotations

import asyncio

from mnistream_common.kafka import TopicChange, ensure_topics
from mnistream_common.storage import ensure_buckets, make_minio

from mnistream_cli.settings import Settings


def provision(settings: Settings) -> tuple[list[TopicChange], list[str]]:
    """Create or align every topic of docs/design.md and create the missing buckets."""
    changes = asyncio.run(ensure_topics(settings.kafka_bootstrap_servers))
    created = ensure_buckets(
        make_minio(settings), [settings.drawings_bucket, settings.artifacts_bucket]
    )
    return changes, created
