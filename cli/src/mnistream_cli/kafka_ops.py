"""Kafka writes the CLI makes: promotions and evaluation tasks (acks=all)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from mnistream_common.events import ModelPromoted, RescoreTask
from mnistream_common.kafka import PUBLISH_TIMEOUT_S, durable_producer
from mnistream_common.rescore import task_key
from mnistream_common.topics import MODEL_PROMOTED, RESCORE_TASKS


async def publish_promotion(bootstrap_servers: str, event: ModelPromoted) -> None:
    """Append a promotion to the ledger and wait until Kafka has it (acks=all)."""
    async with durable_producer(bootstrap_servers) as producer:
        await asyncio.wait_for(
            producer.send_and_wait(
                MODEL_PROMOTED.name, event.to_bytes(), key=event.model.name.encode()
            ),
            PUBLISH_TIMEOUT_S,
        )


async def publish_tasks(bootstrap_servers: str, tasks: Sequence[RescoreTask]) -> None:
    """Publish the chunks of a job (acks=all)."""
    async with durable_producer(bootstrap_servers) as producer:
        futures = [
            await producer.send(RESCORE_TASKS.name, t.to_bytes(), key=task_key(t)) for t in tasks
        ]
        await asyncio.wait_for(asyncio.gather(*futures), PUBLISH_TIMEOUT_S * 4)
