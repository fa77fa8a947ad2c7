"""`python -m bench.scale_planner HISTORY_URL TOPIC CHUNK`: the rescore planner's plan of one job
over every stored drawing, published to TOPIC, in a process of its own; prints its peak RSS.

The planner of a rescore worker does the same (publish_plan with its history client and its
producer), but inside a process that also holds ONNX Runtime and the models: measured alone, the
figure is what planning costs, whatever else the process holds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
import uuid
from datetime import UTC, datetime

from mnistream_common.events import ModelRef, RescoreTask
from mnistream_common.history_client import HistoryClient
from mnistream_common.kafka import durable_producer, ensure_topics
from mnistream_common.rescore import JobSpec, publish_plan, task_key
from mnistream_common.settings import KafkaSettings
from mnistream_common.topics import RESCORE_TASKS


def memory_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (the peak) of this process. Not getrusage's ru_maxrss:
    Linux keeps that across exec, so it reports the parent's size at the fork."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def plan(history_url: str, topic: str, chunk: int) -> dict[str, float | int]:
    kafka = KafkaSettings()
    # A topic like rescore.tasks (its partitions and retention) under the bench's name.
    await ensure_topics(kafka, [dataclasses.replace(RESCORE_TASKS, name=topic)])
    job = JobSpec(
        uuid.uuid4(),
        "rescore",
        ModelRef(name="mnist-digits", version=3, sha256="ab" * 32),
        "s3://mlflow/bench/v3.onnx",
    )
    async with (
        HistoryClient.at(history_url, timeout=60) as history,
        durable_producer(kafka) as producer,
    ):

        async def publish(task: RescoreTask) -> None:
            await producer.send_and_wait(topic, task.to_bytes(), key=task_key(task))

        before = memory_mb("VmRSS")
        started = time.monotonic()
        drawings = await publish_plan(history, publish, job, chunk, datetime.now(UTC))
        seconds = time.monotonic() - started
    peak = memory_mb("VmHWM")
    return {
        "drawings": drawings,
        "chunks": -(-drawings // chunk),
        "seconds": round(seconds, 1),
        "drawings_per_s": round(drawings / seconds) if seconds else 0,
        "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(peak, 1),
    }


def main() -> None:
    history_url, topic, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps(asyncio.run(plan(history_url, topic, chunk))))


if __name__ == "__main__":
    main()
