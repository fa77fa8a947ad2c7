"""What the trainer writes into the registry and how it finds the stored ONNX object."""

from __future__ import annotations

import pytest
import torch
from mnistream_common.storage import S3Uri
from trainer.tracking import (
    VersionTags,
    artifact_object,
    confusion_figure,
    confusion_matrix,
    onnx_signature,
    sample_grid_figure,
)


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (
            "mlflow-artifacts:/5/models/m-0f81/artifacts",
            "s3://mlflow/5/models/m-0f81/artifacts/model.onnx",
        ),
        (
            "mlflow-artifacts://127.0.0.1:5000/1/models/m-1/artifacts/",
            "s3://mlflow/1/models/m-1/artifacts/model.onnx",
        ),
        ("s3://other/2/models/m-2/artifacts", "s3://other/2/models/m-2/artifacts/model.onnx"),
    ],
)
def test_artifact_location_maps_to_the_minio_object(location: str, expected: str) -> None:
    assert str(artifact_object(location, "mlflow", "model.onnx")) == expected
    assert isinstance(artifact_object(location, "mlflow", "model.onnx"), S3Uri)


def test_local_artifact_locations_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="--serve-artifacts"):
        artifact_object("file:///tmp/mlruns/1/models/m-1/artifacts", "mlflow", "model.onnx")


def test_version_tags_are_the_contract_names() -> None:
    tags = VersionTags(
        test_accuracy=0.993149,
        onnx_sha256="ab" * 32,
        onnx_uri="s3://mlflow/1/models/m-1/artifacts/model.onnx",
        architecture="cnn",
        run_id="r1",
        input_spec="pixels …",
        output_spec="probabilities …",
    ).as_dict()
    assert tags["test_accuracy"] == "0.9931"
    assert set(tags) == {
        "test_accuracy", "onnx_sha256", "onnx_uri", "architecture", "run_id",
        "input_spec", "output_spec",
    }  # fmt: skip
    mlp = VersionTags(0.92, "cd" * 32, "s3://b/k", "mlp", "r2", "i", "o", hidden=10).as_dict()
    assert mlp["hidden"] == "10"


def test_confusion_matrix_counts_true_rows_and_predicted_columns() -> None:
    labels = torch.tensor([0, 0, 1, 9, 9, 9])
    predicted = torch.tensor([0, 1, 1, 9, 9, 4])
    matrix = confusion_matrix(labels, predicted)
    assert matrix.shape == (10, 10)
    assert (matrix[0, 0], matrix[0, 1], matrix[1, 1], matrix[9, 9], matrix[9, 4]) == (1, 1, 1, 2, 1)
    assert matrix.sum() == 6


def test_figures_render_without_a_display() -> None:
    matrix = confusion_matrix(torch.tensor([1, 2]), torch.tensor([1, 3]))
    assert confusion_figure(matrix, 0.5).axes
    grid = sample_grid_figure(torch.rand(10, 1, 28, 28), torch.arange(10), "inputs")
    assert len(grid.axes) == 10


def test_signature_names_the_onnx_input_and_output() -> None:
    signature = onnx_signature().to_dict()
    assert '"pixels"' in signature["inputs"]
    assert '"probabilities"' in signature["outputs"]
