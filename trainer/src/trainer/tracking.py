"""MLflow and MinIO at the edge of a training run: figures, the ONNX model, the registry.

The registry tags written here are read by `mnistream promote` and by the workers; their
names are a contract (see `VersionTags`).
"""

from __future__ import annotations

import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlparse

import mlflow
import mlflow.onnx
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime
import torch
from matplotlib.figure import Figure
from minio.error import S3Error
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import Schema, TensorSpec
from mnistream_common.settings import MLflowSettings, S3Settings
from mnistream_common.storage import S3Uri, make_minio, sha256_hex

from trainer.export import INPUT_NAME, OUTPUT_NAME

MODEL_ARTIFACT: Final = "model"
ONNX_FILE: Final = "model.onnx"
PROBE_TIMEOUT_S: Final = 5.0
START_HINT: Final = "start the local stack with `make infra-up`"


class StackUnavailableError(RuntimeError):
    """MLflow or MinIO cannot be reached; nothing is trained until they can."""


class StoredModelMismatchError(RuntimeError):
    """The ONNX object in MinIO is missing or not the file that passed the parity check."""


def require_stack(settings: MLflowSettings, s3: S3Settings) -> None:
    """Fail fast, before any training, when MLflow or the artifacts bucket is unreachable."""
    health = f"{settings.mlflow_tracking_uri.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(health, timeout=PROBE_TIMEOUT_S) as response:  # noqa: S310
            response.read()
    except OSError as exc:
        raise StackUnavailableError(
            f"MLflow is unreachable at {health} ({exc}); {START_HINT}"
        ) from exc
    try:
        bucket_there = make_minio(s3).bucket_exists(s3.artifacts_bucket)
    except Exception as exc:  # any client error means the same to a person: MinIO is not there
        raise StackUnavailableError(
            f"MinIO is unreachable at {s3.s3_endpoint_url} ({exc}); {START_HINT}"
        ) from exc
    if not bucket_there:
        raise StackUnavailableError(
            f"bucket {s3.artifacts_bucket!r} is missing in MinIO; {START_HINT} "
            "(or `mnistream setup`)"
        )


def code_version(repo: Path | None = None) -> str:
    """The git commit the code was trained from, with `-dirty` for uncommitted changes."""
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return described.stdout.strip() or "unknown"


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor) -> npt.NDArray[np.int64]:
    """10×10 counts: row = true digit, column = predicted digit."""
    pairs = labels.to(torch.int64) * 10 + predictions.to(torch.int64)
    return torch.bincount(pairs, minlength=100).reshape(10, 10).numpy()


def confusion_figure(matrix: npt.NDArray[np.int64], accuracy: float) -> Figure:
    """The test-set confusion matrix, counts written in each cell."""
    figure = Figure(figsize=(7, 6), dpi=110)
    axes = figure.add_subplot()
    image = axes.imshow(np.log1p(matrix), cmap="Blues")
    threshold = np.log1p(matrix).max() / 2
    for (row, col), count in np.ndenumerate(matrix):
        color = "white" if np.log1p(count) > threshold else "black"
        axes.text(col, row, str(count), ha="center", va="center", fontsize=7, color=color)
    axes.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true digit")
    axes.set_title(f"MNIST test set, accuracy {accuracy:.4f}")
    figure.colorbar(image, ax=axes, label="log(1 + count)")
    return figure


def sample_grid_figure(
    pixels: torch.Tensor, labels: torch.Tensor, title: str, columns: int = 8
) -> Figure:
    """A grid of model inputs (what the network saw in training) with their labels."""
    count = min(len(labels), columns * columns)
    rows = -(-count // columns)
    figure = Figure(figsize=(columns * 1.1, rows * 1.25), dpi=110)
    for index in range(count):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(pixels[index, 0].numpy(), cmap="gray", vmin=0.0, vmax=1.0)
        axes.set_title(str(int(labels[index])), fontsize=8)
        axes.axis("off")
    figure.suptitle(title)
    return figure


def onnx_signature() -> ModelSignature:
    """The MLflow signature of every mnistream model: pixels in, probabilities out."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, 28, 28), INPUT_NAME)]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 10), OUTPUT_NAME)]),
    )


@dataclass(frozen=True)
class LoggedOnnx:
    """The ONNX model as logged in MLflow and stored in MinIO."""

    model_uri: str
    onnx_uri: S3Uri


def log_onnx_model(onnx_bytes: bytes, artifacts_bucket: str) -> LoggedOnnx:
    """Log the ONNX flavor into the active run; returns where its model.onnx object lives."""
    info = mlflow.onnx.log_model(
        onnx.load_from_string(onnx_bytes),
        name=MODEL_ARTIFACT,
        signature=onnx_signature(),
        # One self-contained file: workers download model.onnx alone and check its sha256.
        save_as_external_data=False,
        pip_requirements=[f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"],
    )
    location = mlflow.get_logged_model(info.model_id).artifact_location
    return LoggedOnnx(info.model_uri, artifact_object(location, artifacts_bucket, ONNX_FILE))


def artifact_object(artifact_location: str, bucket: str, file: str) -> S3Uri:
    """The MinIO object behind an MLflow artifact location (`mlflow-artifacts:/…` or `s3://…`)."""
    parsed = urlparse(artifact_location)
    if parsed.scheme == "s3":
        base = S3Uri.parse(artifact_location.rstrip("/") + "/" + file)
        return base
    if parsed.scheme != "mlflow-artifacts":
        raise ValueError(
            f"artifact location {artifact_location!r} is neither mlflow-artifacts:/ nor s3://; "
            "run the MLflow server with --serve-artifacts --artifacts-destination s3://<bucket>"
        )
    # The server proxies mlflow-artifacts:/<path> to s3://<artifacts bucket>/<path>.
    return S3Uri(bucket, f"{parsed.path.strip('/')}/{file}")


def verify_stored_onnx(s3: S3Settings, uri: S3Uri, expected_sha256: str) -> None:
    """Read the stored model.onnx back from MinIO and check it is byte for byte the exported one."""
    # The blocking client, not the async ObjectStore: train_and_register must stay callable
    # from code that already runs an event loop (tests, the `make run` bootstrap).
    client = make_minio(s3)
    try:
        response = client.get_object(uri.bucket, uri.key)
    except S3Error as exc:
        raise StoredModelMismatchError(
            f"{uri} cannot be read back from MinIO after logging the model ({exc.code})"
        ) from exc
    try:
        stored = response.read()
    finally:
        response.close()
        response.release_conn()
    actual = sha256_hex(stored)
    if actual != expected_sha256:
        raise StoredModelMismatchError(
            f"{uri} has sha256 {actual}, but the exported model has {expected_sha256}"
        )


@dataclass(frozen=True)
class VersionTags:
    """The registry tags of a model version; `mnistream promote` and the workers read them."""

    test_accuracy: float
    onnx_sha256: str
    onnx_uri: str
    architecture: str
    run_id: str
    input_spec: str
    output_spec: str
    hidden: int | None = None
    dataset_version: str | None = None  # the user labels it learnt from, if any
    heldout_accuracy: float | None = None  # on their held-out split
    drift_reference_uri: str | None = None  # the run's drift_reference.json in MinIO
    retrain_key: str | None = None  # the `mnistream retrain` that trained it (dataset + config)

    def as_dict(self) -> dict[str, str]:
        """The tags as MLflow stores them (strings), `hidden` only for the MLP, the labels'
        figures only for a model that learnt from some."""
        tags = {
            "test_accuracy": f"{self.test_accuracy:.4f}",
            "onnx_sha256": self.onnx_sha256,
            "onnx_uri": self.onnx_uri,
            "architecture": self.architecture,
            "run_id": self.run_id,
            "input_spec": self.input_spec,
            "output_spec": self.output_spec,
        }
        if self.hidden is not None:
            tags["hidden"] = str(self.hidden)
        if self.dataset_version is not None:
            tags["dataset_version"] = self.dataset_version
        if self.heldout_accuracy is not None:
            tags["heldout_accuracy"] = f"{self.heldout_accuracy:.4f}"
        if self.drift_reference_uri is not None:
            tags["drift_reference_uri"] = self.drift_reference_uri
        if self.retrain_key is not None:
            tags["retrain_key"] = self.retrain_key
        return tags


def register_version(name: str, model_uri: str, tags: VersionTags) -> int:
    """Register the logged model as a new version of `name`, tagged in the same call."""
    version = mlflow.register_model(model_uri, name, tags=tags.as_dict())
    return int(version.version)
