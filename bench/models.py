"""The models the benchmark serves: a quick CNN (the throughput figures) and the weak MLP."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistream_common.events import ModelPromoted
from mnistream_common.kafka import read_ledger
from mnistream_common.settings import KafkaSettings, S3Settings
from mnistream_common.storage import ObjectStore, S3Uri, make_minio

from bench.config import Sizes
from bench.stack import BenchError

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class BenchModel:
    """A registered model version and what it scored on the MNIST test set."""

    arch: str
    version: int
    test_accuracy: float
    onnx_uri: str
    sha256: str
    train_images: int
    epochs: int
    train_seconds: float

    def as_dict(self) -> dict[str, Any]:
        """For the results file."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class BenchModels:
    """The champion for throughput (CNN) and the other model hot swaps alternate with."""

    cnn: BenchModel
    mlp: BenchModel

    def other(self, version: int) -> BenchModel:
        """The model that is not `version`."""
        return self.mlp if version == self.cnn.version else self.cnn


class _Settings(KafkaSettings, S3Settings):
    """Where the bench finds Kafka and MinIO (the environment set by config.stack_env)."""


def train_models(sizes: Sizes) -> BenchModels:
    """Train and register the weak MLP (10 hidden units) and a quick CNN on a subset."""
    from trainer.config import TrainConfig

    mlp = _train(TrainConfig(arch="mlp", hidden=10, workers=0))
    return BenchModels(cnn=_train(_cnn_config(sizes)), mlp=mlp)


def train_second_cnn(sizes: Sizes, seed: int = 7) -> BenchModel:
    """Another quick CNN (another seed), registered: the candidate of the rollout phase."""
    return _train(_cnn_config(sizes, seed))


def _cnn_config(sizes: Sizes, seed: int = 0) -> Any:
    from trainer.config import TrainConfig

    return TrainConfig(
        arch="cnn",
        limit_train=sizes.cnn_train_images,
        epochs=sizes.cnn_epochs,
        augment=False,
        workers=0,
        seed=seed,
    )


def _train(train_config: Any) -> BenchModel:
    from trainer.pipeline import train_and_register
    from trainer.settings import Settings as TrainerSettings

    started = time.monotonic()
    registered = train_and_register(train_config, TrainerSettings())
    seconds = time.monotonic() - started
    print(
        f"trained {train_config.arch} v{registered.version}: test accuracy "
        f"{registered.test_accuracy:.4f} in {seconds:.0f} s",
        flush=True,
    )
    return BenchModel(
        arch=train_config.arch,
        version=registered.version,
        test_accuracy=registered.test_accuracy,
        onnx_uri=registered.onnx_uri,
        sha256=registered.sha256,
        train_images=train_config.limit_train or 55_000,
        epochs=train_config.epochs,
        train_seconds=round(seconds, 1),
    )


def promote(version: int, reason: str) -> ModelPromoted:
    """`mnistream promote VERSION --force` as an operator runs it; returns its ledger event."""
    mnistream("promote", str(version), "--force", "--reason", reason)
    return last_promotion()


def mnistream(*args: str) -> str:
    """Run the `mnistream` CLI as an operator does; its output, or a BenchError with it."""
    result = subprocess.run(
        [str(BIN / "mnistream"), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    if result.returncode != 0:
        command = " ".join(args)
        raise BenchError(f"mnistream {command} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def last_promotion() -> ModelPromoted:
    """The newest event in the promotion ledger."""
    ledger = asyncio.run(read_ledger(_Settings()))
    if not ledger:
        raise BenchError("the promotion ledger is empty right after a promotion")
    return ledger[-1]


def onnx_bytes(model: BenchModel) -> bytes:
    """The registered ONNX file, read from MinIO as the workers read it."""
    store = ObjectStore(make_minio(_Settings()))
    return asyncio.run(store.get(S3Uri.parse(model.onnx_uri)))
