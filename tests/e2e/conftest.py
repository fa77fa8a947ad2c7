"""End-to-end fixtures: registered models, the running services, and ways to watch Kafka.

Everything here is real: models trained with the trainer and registered in MLflow, services
started as the console scripts users run, Kafka, Postgres and MinIO from the test stack.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from mnistream_common.events import DigitPredicted, InvalidEventError
from mnistream_common.topics import DIGITS_PREDICTED

from tests.e2e.support import Models, Predictions, eventually, everything_settled, mnistream
from tests.helpers import render_canvas_png
from tests.stack import require_kafka, require_minio, require_mlflow, require_postgres
from tests.system import System


@pytest.fixture(scope="session")
def stack() -> None:
    """The test stack must be up (fails, never skips)."""
    require_kafka()
    require_postgres()
    require_minio()
    require_mlflow()


@pytest.fixture(scope="session")
def models(stack: None) -> Models:
    """Train and register a weak MLP and a better MLP on MNIST subsets (seconds each)."""
    from trainer.config import TrainConfig
    from trainer.pipeline import train_and_register
    from trainer.settings import Settings as TrainerSettings

    settings = TrainerSettings()
    weak = train_and_register(
        TrainConfig(arch="mlp", hidden=10, limit_train=3000, epochs=1, augment=False, workers=0),
        settings,
    )
    better = train_and_register(
        TrainConfig(arch="mlp", hidden=128, limit_train=20000, epochs=1, augment=False, workers=0),
        settings,
    )
    assert better.test_accuracy > weak.test_accuracy, (weak, better)
    return Models(weak=weak.version, better=better.version)


@pytest.fixture(scope="session")
def system(models: Models) -> Iterator[System]:
    """gateway, history-service, 2 inference workers, 2 rescore workers; the weak model promoted."""
    running = System(inference_workers=2, rescore_workers=2)
    # The CLI run by the tests talks to this system's services.
    os.environ["HISTORY_URL"] = running.history_url
    os.environ["GATEWAY_URL"] = running.gateway_url
    mnistream("promote", str(models.weak), "--force", "--reason", "e2e: first model")
    running.start()
    running.inference_ready()
    # The first promotion rescores what earlier suites stored; let it finish so that every test
    # starts from a quiet system (tests that compare rows would otherwise see it mid-way).
    asyncio.run(eventually(everything_settled, 300, "the first promotion's rescore settled"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def drawings() -> list[bytes]:
    """MNIST test digits rendered like browser canvas drawings (280×280 RGBA PNG)."""
    from trainer.data import load_split
    from trainer.settings import Settings as TrainerSettings

    test = load_split(TrainerSettings().mnist_root, train=False)
    images = test.images[:300].numpy().astype(np.float32) / 255.0
    return [render_canvas_png(image) for image in images]


@pytest.fixture
async def predictions(stack: None) -> AsyncIterator[Predictions]:
    """Collects `digits.predicted` from now on (a consumer without a group)."""
    collected = Predictions()
    consumer = AIOKafkaConsumer(bootstrap_servers=require_kafka(), enable_auto_commit=False)
    await consumer.start()
    partitions = [
        TopicPartition(DIGITS_PREDICTED.name, p) for p in range(DIGITS_PREDICTED.partitions)
    ]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)  # resolve the end offsets now, before the test produces

    async def collect() -> None:
        async for record in consumer:
            try:
                event = DigitPredicted.from_bytes(record.value or b"")
            except InvalidEventError:
                continue
            collected.by_digit[event.digit_id].append(event)

    task = asyncio.create_task(collect())
    try:
        yield collected
    finally:
        task.cancel()
        await consumer.stop()
