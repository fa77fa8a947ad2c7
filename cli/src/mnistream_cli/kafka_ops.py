"""Kafka writes the CLI makes: promotions and evaluation tasks (acks=all)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from mnistream_common.events import ModelPromoted, RescoreTask
from mnistream_common.kafka import PUBLISH_TIMEOUT_S, durable_producer, publish_ledger
from mnistream_common.rescore import JobSpec, StoredIds, publish_plan, task_key
from mnistream_common.settings import KafkaSettings
from mnistream_common.topics import RESCORE_TASKS

# Drawings per chunk of an evaluation job.
EVALUATION_CHUNK = 500


async def publish_promotion(kafka: KafkaSettings, event: ModelPromoted) -> None:
    """Append a promotion to the ledger and wait until Kafka has it (acks=all)."""
    await publish_ledger(kafka, event, event.model.name)


async def publish_job(kafka: KafkaSettings, history: StoredIds, job: JobSpec) -> int:
    """Publish the chunks of a job over every drawing stored now (acks=all, a page of ids at a
    time); returns how many drawings it covers."""
    async with durable_producer(kafka) as producer:

        async def publish(task: RescoreTask) -> None:
            sent = producer.send_and_wait(RESCORE_TASKS.name, task.to_bytes(), key=task_key(task))
            await asyncio.wait_for(sent, PUBLISH_TIMEOUT_S)

        return await publish_plan(history, publish, job, EVALUATION_CHUNK, datetime.now(UTC))
