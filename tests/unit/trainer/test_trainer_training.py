"""Training is repeatable with a seed; configs, splits and the epoch line are as documented."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from trainer.config import TrainConfig
from trainer.data import MnistTensors
from trainer.models import build_model
from trainer.training import (
    DeviceUnavailableError,
    EpochMetrics,
    SilentReporter,
    TrainValid,
    evaluate,
    fit,
    resolve_device,
    seed_everything,
    split_train_valid,
)

from tests.unit.trainer.digits import mnist_like


@pytest.fixture(scope="module")
def sample() -> MnistTensors:
    return mnist_like(300, seed=1)


def _train(config: TrainConfig, sample: MnistTensors) -> dict[str, torch.Tensor]:
    seed_everything(config.seed)
    model = build_model(config.arch, hidden=config.hidden)
    split = split_train_valid(sample, config)
    fit(model, split, config, torch.device("cpu"), SilentReporter())
    return model.state_dict()


def _config(**overrides: object) -> TrainConfig:
    values: dict[str, object] = {
        "arch": "mlp", "hidden": 16, "epochs": 2, "batch_size": 32, "valid_size": 60,
        "workers": 0, "augment": True, "device": "cpu",
    }  # fmt: skip
    return TrainConfig.model_validate({**values, **overrides})


def test_same_seed_gives_the_same_weights(sample: MnistTensors) -> None:
    first = _train(_config(seed=7), sample)
    second = _train(_config(seed=7), sample)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_other_seed_gives_other_weights(sample: MnistTensors) -> None:
    first = _train(_config(seed=7), sample)
    other = _train(_config(seed=8), sample)
    assert not all(torch.equal(first[key], other[key]) for key in first)


def test_worker_processes_do_not_change_the_result(sample: MnistTensors) -> None:
    in_process = _train(_config(seed=3, epochs=1), sample)
    with_workers = _train(_config(seed=3, epochs=1, workers=2), sample)
    assert all(torch.equal(in_process[key], with_workers[key]) for key in in_process)


def test_cnn_learns_the_sample(sample: MnistTensors) -> None:
    config = _config(arch="cnn", epochs=3, lr=3e-3, augment=False)
    seed_everything(config.seed)
    model = build_model("cnn")
    split = split_train_valid(sample, config)
    history = fit(model, split, config, torch.device("cpu"), SilentReporter())
    assert [m.epoch for m in history] == [1, 2, 3]
    assert evaluate(model, split.valid, torch.device("cpu")).accuracy > 0.5


def test_validation_is_held_out_and_the_limit_applies_to_training(sample: MnistTensors) -> None:
    split: TrainValid = split_train_valid(sample, _config(valid_size=100, limit_train=50))
    assert len(split.train.labels) == 50
    assert torch.equal(split.valid.labels, sample.labels[200:])
    assert torch.equal(split.train.images, sample.images[:50])


def test_epoch_line_is_the_documented_one() -> None:
    metrics = EpochMetrics(1, 5, 0.647842, 0.8079, 0.31, 0.91, seconds=12.0)
    expected = "Epoch [1/5] train loss 0.64784, acc 0.80790 | valid loss 0.31000, acc 0.91000"
    assert metrics.log_line() == expected


def test_architecture_defaults_fill_only_what_is_not_given() -> None:
    mlp = TrainConfig(arch="mlp")
    cnn = TrainConfig.model_validate({"arch": "cnn", "epochs": None, "lr": None})
    assert (mlp.epochs, mlp.augment) == (3, False)
    assert (cnn.epochs, cnn.augment) == (4, True)
    assert TrainConfig.model_validate({"arch": "mlp", "epochs": 9, "augment": True}).epochs == 9


def test_invalid_config_is_refused_with_the_field() -> None:
    with pytest.raises(ValidationError, match="epochs"):
        TrainConfig(epochs=0)


def test_auto_device_is_cuda_only_when_available() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="only meaningful without a GPU")
def test_asking_for_cuda_without_a_gpu_says_what_to_use() -> None:
    with pytest.raises(DeviceUnavailableError, match="--device auto or cpu"):
        resolve_device("cuda")
