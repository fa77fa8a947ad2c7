"""A real training run against the local MLflow and MinIO: the registered version's ONNX is in
MinIO, its sha256 tag is the stored object's, and a run whose ONNX disagrees with PyTorch
registers nothing. Fails (never skips) when the stack is down: `make infra-up`."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import uuid

import numpy as np
import onnxruntime as ort
import pytest
import trainer.pipeline
from mlflow import MlflowClient
from mnistream_cli.datasets import LabeledInput, write_version
from mnistream_common.drift import SIGNALS
from mnistream_common.events import DriftReference
from mnistream_common.settings import S3Settings
from mnistream_common.storage import ObjectStore, S3Uri, make_minio, sha256_hex
from trainer.config import TrainConfig
from trainer.data import load_split
from trainer.export import INPUT_NAME, OUTPUT_NAME, ParityError, export_onnx
from trainer.labels import REPEATS
from trainer.models import MLP
from trainer.pipeline import RegisteredModel, train_and_register
from trainer.reference import REFERENCE_DRAWINGS, REFERENCE_FILE
from trainer.settings import Settings

from tests.system import BIN

pytestmark = pytest.mark.integration

MODEL_NAME = "mnist-digits-trainer-test"
EXPERIMENT = "mnist-trainer-tests"
QUICK = TrainConfig(
    arch="mlp", hidden=16, epochs=1, limit_train=2000, valid_size=1000, workers=0, device="cpu"
)


@pytest.fixture(scope="module")
def settings(mlflow_tracking_uri: str, s3_settings: S3Settings) -> Settings:
    """The trainer's settings aimed at the stack, registering under a test-only model name."""
    return Settings(
        mlflow_tracking_uri=mlflow_tracking_uri,
        s3_endpoint_url=s3_settings.s3_endpoint_url,
        s3_access_key_id=s3_settings.s3_access_key_id,
        s3_secret_access_key=s3_settings.s3_secret_access_key,
        artifacts_bucket=s3_settings.artifacts_bucket,
        registered_model_name=MODEL_NAME,
        mlflow_experiment=EXPERIMENT,
    )


@pytest.fixture(scope="module")
def client(mlflow_tracking_uri: str) -> MlflowClient:
    return MlflowClient(mlflow_tracking_uri)


@pytest.fixture(scope="module")
def registered(settings: Settings) -> RegisteredModel:
    """One quick training run (1 epoch, 2,000 images), registered."""
    return train_and_register(QUICK, settings)


def _stored_bytes(settings: Settings, uri: str) -> bytes:
    parsed = S3Uri.parse(uri)
    response = make_minio(settings).get_object(parsed.bucket, parsed.key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def test_registered_onnx_is_in_minio_with_the_tagged_sha256(
    registered: RegisteredModel, settings: Settings, client: MlflowClient
) -> None:
    version = client.get_model_version(MODEL_NAME, str(registered.version))
    stored = _stored_bytes(settings, version.tags["onnx_uri"])
    assert version.tags["onnx_sha256"] == sha256_hex(stored) == registered.sha256
    assert version.tags["onnx_uri"].startswith(f"s3://{settings.artifacts_bucket}/")
    assert version.tags["onnx_uri"].endswith("/model.onnx")
    assert version.run_id == registered.run_id == version.tags["run_id"]


def test_registered_version_carries_every_contract_tag(
    registered: RegisteredModel, client: MlflowClient
) -> None:
    tags = client.get_model_version(MODEL_NAME, str(registered.version)).tags
    assert tags["architecture"] == "mlp"
    assert tags["hidden"] == "16"
    assert float(tags["test_accuracy"]) == pytest.approx(registered.test_accuracy, abs=1e-4)
    assert "float32[N,1,28,28]" in tags["input_spec"]
    assert "probabilities" in tags["output_spec"]


def test_stored_onnx_serves_probabilities_for_any_batch(
    registered: RegisteredModel, settings: Settings
) -> None:
    session = ort.InferenceSession(
        _stored_bytes(settings, registered.onnx_uri), providers=["CPUExecutionProvider"]
    )
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME]
    assert [o.name for o in session.get_outputs()] == [OUTPUT_NAME]
    pixels = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    (probabilities,) = session.run([OUTPUT_NAME], {INPUT_NAME: pixels})
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_run_records_params_epoch_metrics_figures_and_code_version(
    registered: RegisteredModel, client: MlflowClient
) -> None:
    run = client.get_run(registered.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["arch"] == "mlp"
    assert run.data.params["train_images"] == "2000"
    for metric in ("train_loss", "train_accuracy", "valid_loss", "valid_accuracy"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == [1]
    assert run.data.metrics["test_accuracy"] == pytest.approx(registered.test_accuracy)
    assert run.data.metrics["onnx_parity_max_abs_diff"] <= 1e-4
    assert run.data.tags["code_version"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "training_inputs.png", REFERENCE_FILE} <= artifacts


def test_the_drift_reference_is_logged_with_the_run_and_named_by_a_tag(
    registered: RegisteredModel, settings: Settings, client: MlflowClient
) -> None:
    tags = client.get_model_version(MODEL_NAME, str(registered.version)).tags
    uri = tags["drift_reference_uri"]
    assert uri.endswith(f"/{registered.run_id}/artifacts/{REFERENCE_FILE}"), uri
    reference = DriftReference.model_validate_json(_stored_bytes(settings, uri))
    trained_on = int(client.get_run(registered.run_id).data.params["train_images"])
    drawings = min(REFERENCE_DRAWINGS, trained_on)  # a sample of what it learnt from
    assert reference.drawings == drawings
    assert reference.source == f"{drawings} MNIST training digits through center_digit"
    assert set(reference.signals) == set(SIGNALS)
    for signal in reference.signals.values():
        assert sum(signal.shares) == pytest.approx(1.0)


@pytest.fixture
def exporting_another_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the export hand back a different network's ONNX, as a broken exporter would."""
    monkeypatch.setattr(trainer.pipeline, "export_onnx", lambda _model: export_onnx(MLP(16)))


@pytest.mark.usefixtures("exporting_another_model")
def test_parity_failure_fails_the_run_and_registers_nothing(
    settings: Settings, client: MlflowClient
) -> None:
    def versions() -> set[str]:
        return {v.version for v in client.search_model_versions(f"name = '{MODEL_NAME}'")}

    before = versions()
    with pytest.raises(ParityError):
        train_and_register(QUICK.model_copy(update={"limit_train": 500}), settings)
    assert versions() == before
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    latest = client.search_runs([experiment.experiment_id], order_by=["start_time DESC"])[0]
    assert latest.info.status == "FAILED"


def test_a_run_on_user_labels_records_the_dataset_version_it_learnt_from(
    settings: Settings, client: MlflowClient
) -> None:
    """`mnistream train --labels V`, as a user runs it: the run's MLflow dataset input is the
    version, and the registered version carries it with the held-out accuracy."""
    drawings = load_split(settings.mnist_root, train=False)
    rows = [
        LabeledInput(uuid.uuid4(), int(label), bytes(image.numpy().tobytes()), 2)
        for image, label in zip(drawings.images[:80], drawings.labels[:80], strict=True)
    ]
    snapshot = asyncio.run(write_version(ObjectStore(make_minio(settings)), "datasets", rows))
    env = {"REGISTERED_MODEL_NAME": MODEL_NAME, "MLFLOW_EXPERIMENT": EXPERIMENT}
    done = subprocess.run(
        [BIN / "mnistream", "train", "--arch", "mlp", "--epochs", "1", "--limit-train", "2000",
         "--workers", "0", "--device", "cpu", "--labels", snapshot.version],
        capture_output=True, text=True, timeout=600, env={**os.environ, **env}, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"labels       {snapshot.version}" in done.stdout
    version = re.search(r"registered +\S+ version (\d+)", done.stdout)
    assert version is not None, done.stdout
    tags = client.get_model_version(MODEL_NAME, version[1]).tags
    assert tags["dataset_version"] == snapshot.version
    assert 0 <= float(tags["heldout_accuracy"]) <= 1
    run = client.get_run(tags["run_id"])
    assert run.inputs is not None, "the run records no inputs"
    [used] = run.inputs.dataset_inputs
    assert used.dataset.name == snapshot.version
    assert f"s3://datasets/{snapshot.version}/" in used.dataset.source
    assert {t.key: t.value for t in used.tags}["mlflow.data.context"] == "training"
    train_rows = snapshot.manifest["splits"]["train"]["rows"]
    assert run.data.params["labels_train_images"] == str(train_rows)
    assert run.data.params["train_images"] == str(2000 + REPEATS * train_rows)
    reference = DriftReference.model_validate_json(
        _stored_bytes(settings, tags["drift_reference_uri"])
    )
    assert f"the {train_rows} labelled drawings of dataset" in reference.source
    assert reference.drawings == min(REFERENCE_DRAWINGS, 2000) + train_rows
