"""One training run from data to a registered, verified model version.

    data (MNIST, and user labels when given) ─▶ train (seeded, augmented) ─▶ test (and the
         labels' held-out split) ─▶ ONNX export ─▶ parity with PyTorch ─▶ drift reference
         ─▶ log to MLflow ─▶ read model.onnx back from MinIO, check sha256 ─▶ register + tags

Any failure before the last step fails the MLflow run and registers nothing.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

import mlflow
import torch
from mnistream_common.storage import sha256_hex
from pydantic import BaseModel, ConfigDict, Field

from trainer import tracking
from trainer.augment import AugmentPolicy, plain_inputs
from trainer.config import TrainConfig
from trainer.data import MnistTensors, ensure_mnist, load_split
from trainer.export import INPUT_SPEC, OPSET, OUTPUT_SPEC, PARITY_SAMPLES, check_parity, export_onnx
from trainer.labels import LabelSet, log_dataset, with_labels
from trainer.models import MLP, DigitClassifier, build_model
from trainer.reference import REFERENCE_FILE, drift_reference, log_reference
from trainer.settings import Settings
from trainer.training import (
    EpochBatches,
    EpochMetrics,
    Evaluation,
    SilentReporter,
    TrainingReporter,
    TrainValid,
    evaluate,
    fit,
    resolve_device,
    seed_everything,
    split_train_valid,
)


class RegisteredModel(BaseModel):
    """What a training run produced: a registered model version and how good it is."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int = Field(ge=1)
    run_id: str
    test_accuracy: float
    onnx_uri: str
    sha256: str
    architecture: str
    epoch_seconds: list[float] = Field(description="How long each epoch took.")
    dataset_version: str | None = None
    heldout_accuracy: float | None = Field(
        default=None, description="On the held-out split of the user labels it learnt from."
    )


class _MlflowEpochs:
    """Logs each epoch's metrics to the active run, then passes the event on."""

    def __init__(self, inner: TrainingReporter) -> None:
        self._inner = inner

    def stage(self, message: str) -> None:
        self._inner.stage(message)

    def epoch_started(self, epoch: int, epochs: int, batches: int) -> None:
        self._inner.epoch_started(epoch, epochs, batches)

    def batch_finished(self, loss: float) -> None:
        self._inner.batch_finished(loss)

    def epoch_finished(self, metrics: EpochMetrics) -> None:
        mlflow.log_metrics(
            {
                "train_loss": metrics.train_loss,
                "train_accuracy": metrics.train_accuracy,
                "valid_loss": metrics.valid_loss,
                "valid_accuracy": metrics.valid_accuracy,
                "epoch_seconds": metrics.seconds,
            },
            step=metrics.epoch,
        )
        self._inner.epoch_finished(metrics)


def train_and_register(
    config: TrainConfig,
    settings: Settings | None = None,
    reporter: TrainingReporter | None = None,
    labels: LabelSet | None = None,
    retrain_key: str | None = None,
) -> RegisteredModel:
    """Train a model (on MNIST, and on `labels` when given), export and verify its ONNX, and
    register it as a new MLflow version (tagged with `retrain_key` when a retrain made it)."""
    settings = settings or Settings()
    reporter = reporter or SilentReporter()
    tracking.require_stack(settings, settings)
    ensure_mnist(settings)
    seed_everything(config.seed)
    device = resolve_device(config.device)
    mnist = split_train_valid(load_split(settings.mnist_root, train=True), config)
    split = with_labels(mnist, labels)
    model = build_model(config.arch, hidden=config.hidden).to(device)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(settings.mlflow_experiment)
    with mlflow.start_run() as run:
        _log_params(config, split, model, device)
        if labels is not None:
            log_dataset(labels)
        reporter.stage(f"training {config.arch} on {device} ({len(split.train.labels)} images)")
        history = fit(model, split, config, device, _MlflowEpochs(reporter))
        test_set = load_split(settings.mnist_root, train=False)
        evaluation = _log_test(model, test_set, device, reporter)
        heldout = _log_heldout(model, labels, device, reporter)
        _log_training_inputs(mnist, config)  # MNIST's: no user's drawing in MLflow's figures
        onnx_bytes = _export_checked(model, test_set, reporter)
        reporter.stage("measuring the drift reference on the training data")
        log_reference(drift_reference(model, mnist.train, labels, device, config.seed))
        reference_uri = tracking.artifact_object(
            run.info.artifact_uri, settings.artifacts_bucket, REFERENCE_FILE
        )
        if retrain_key is not None:
            mlflow.set_tag("retrain_key", retrain_key)
        outcome = _Outcome(
            run.info.run_id, evaluation, history, str(reference_uri), labels, heldout, retrain_key
        )
        return _register(onnx_bytes, model, settings, outcome, reporter)


@dataclass(frozen=True)
class _Outcome:
    run_id: str
    test: Evaluation
    history: list[EpochMetrics]
    drift_reference_uri: str
    labels: LabelSet | None = None
    heldout: Evaluation | None = None
    retrain_key: str | None = None


def _log_params(
    config: TrainConfig, split: TrainValid, model: DigitClassifier, device: torch.device
) -> None:
    mlflow.log_params(config.model_dump(mode="json"))
    mlflow.log_params(
        {
            "train_images": len(split.train.labels),
            "valid_images": len(split.valid.labels),
            "parameters": sum(p.numel() for p in model.parameters()),
            "resolved_device": str(device),
            "torch_version": torch.__version__,
            "onnx_opset": OPSET,
        }
    )
    mlflow.set_tags({"code_version": tracking.code_version(), "host": platform.node()})


def _log_test(
    model: DigitClassifier, test_set: MnistTensors, device: torch.device, reporter: TrainingReporter
) -> Evaluation:
    reporter.stage("evaluating on the MNIST test set")
    test = evaluate(model, test_set, device)
    mlflow.log_metrics({"test_accuracy": test.accuracy, "test_loss": test.loss})
    matrix = tracking.confusion_matrix(test_set.labels, test.predictions)
    mlflow.log_figure(tracking.confusion_figure(matrix, test.accuracy), "confusion_matrix.png")
    return test


def _log_heldout(
    model: DigitClassifier,
    labels: LabelSet | None,
    device: torch.device,
    reporter: TrainingReporter,
) -> Evaluation | None:
    if labels is None or not len(labels.heldout.labels):
        return None
    reporter.stage(f"evaluating on the {len(labels.heldout.labels)} held-out labelled drawings")
    heldout = evaluate(model, labels.heldout, device)
    mlflow.log_metrics({"heldout_accuracy": heldout.accuracy, "heldout_loss": heldout.loss})
    return heldout


def _log_training_inputs(split: TrainValid, config: TrainConfig) -> None:
    # The first batch of epoch 1 exactly as the model received it.
    policy = AugmentPolicy() if config.augment else None
    pixels, labels = EpochBatches(split.train, config, 1, policy)[0]
    title = "augmented, then center_digit" if policy else "plain MNIST (no augmentation)"
    figure = tracking.sample_grid_figure(pixels, labels, f"training inputs: {title}")
    mlflow.log_figure(figure, "training_inputs.png")


def _export_checked(
    model: DigitClassifier, test_set: MnistTensors, reporter: TrainingReporter
) -> bytes:
    reporter.stage("exporting ONNX and checking it against PyTorch")
    onnx_bytes = export_onnx(model)
    pixels = plain_inputs(test_set.images[:PARITY_SAMPLES])
    parity = check_parity(model, onnx_bytes, pixels)
    mlflow.log_metric("onnx_parity_max_abs_diff", parity.max_abs_diff)
    return onnx_bytes


def _register(
    onnx_bytes: bytes,
    model: DigitClassifier,
    settings: Settings,
    outcome: _Outcome,
    reporter: TrainingReporter,
) -> RegisteredModel:
    reporter.stage("logging the ONNX model and verifying it in MinIO")
    logged = tracking.log_onnx_model(onnx_bytes, settings.artifacts_bucket)
    sha256 = sha256_hex(onnx_bytes)
    tracking.verify_stored_onnx(settings, logged.onnx_uri, sha256)
    tags = tracking.VersionTags(
        test_accuracy=outcome.test.accuracy,
        onnx_sha256=sha256,
        onnx_uri=str(logged.onnx_uri),
        architecture=model.architecture,
        run_id=outcome.run_id,
        input_spec=INPUT_SPEC,
        output_spec=OUTPUT_SPEC,
        hidden=model.hidden if isinstance(model, MLP) else None,
        dataset_version=outcome.labels.version if outcome.labels else None,
        heldout_accuracy=outcome.heldout.accuracy if outcome.heldout else None,
        drift_reference_uri=outcome.drift_reference_uri,
        retrain_key=outcome.retrain_key,
    )
    reporter.stage(f"registering a new version of {settings.registered_model_name}")
    version = tracking.register_version(settings.registered_model_name, logged.model_uri, tags)
    return RegisteredModel(
        name=settings.registered_model_name,
        version=version,
        run_id=outcome.run_id,
        test_accuracy=outcome.test.accuracy,
        onnx_uri=str(logged.onnx_uri),
        sha256=sha256,
        architecture=model.architecture,
        epoch_seconds=[m.seconds for m in outcome.history],
        dataset_version=tags.dataset_version,
        heldout_accuracy=tags.heldout_accuracy,
    )
