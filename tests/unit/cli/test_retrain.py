"""What names a retrain: the labels and how it trains, not where it runs."""

from __future__ import annotations

from mnistream_cli.retrain import ORDER, Step, retrain_key
from trainer.config import TrainConfig

DATASET = "a" * 64


def test_the_same_labels_and_training_are_the_same_retrain_wherever_it_runs() -> None:
    here = TrainConfig(arch="mlp", hidden=128, epochs=2, device="cpu", workers=0)
    there = TrainConfig(arch="mlp", hidden=128, epochs=2, device="cuda", workers=4)
    assert retrain_key(DATASET, here) == retrain_key(DATASET, there)


def test_other_labels_or_other_training_are_another_retrain() -> None:
    config = TrainConfig(arch="mlp", hidden=128, epochs=2)
    keys = {
        retrain_key(DATASET, config),
        retrain_key("b" * 64, config),
        retrain_key(DATASET, TrainConfig(arch="mlp", hidden=128, epochs=3)),
        retrain_key(DATASET, TrainConfig(arch="mlp", hidden=128, epochs=2, seed=1)),
    }
    assert len(keys) == 4


def test_the_steps_run_in_the_workflow_order() -> None:
    assert [s.value for s in ORDER] == ["snapshot", "train", "evaluate", "canary", "promote"]
    assert ORDER[-1] is Step.promote
