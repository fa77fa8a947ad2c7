"""The hyper-parameters of one training run."""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainer.models import Architecture

DeviceChoice = Literal["auto", "cpu", "cuda"]

# What an architecture gets when a value is not given. The MLP is the teaching app's quick,
# weak first model, trained like it was: plain MNIST, no augmentation (a 10-unit MLP lacks the
# capacity to absorb the moves and loses several points). The CNN, trained with augmentation
# for drawings, is the one that reaches ≥ 99.3 % on the MNIST test set.
ARCH_DEFAULTS: Final[dict[str, dict[str, Any]]] = {
    "mlp": {"epochs": 3, "lr": 3e-3, "augment": False},
    "cnn": {"epochs": 4, "lr": 4e-3, "augment": True},
}


class TrainConfig(BaseModel):
    """Everything that decides what a training run produces (logged as MLflow params)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    arch: Architecture = "cnn"
    epochs: int = Field(default=4, ge=1, le=100)
    hidden: int = Field(default=10, ge=1, le=4096, description="MLP hidden units.")
    batch_size: int = Field(default=128, ge=1, le=8192)
    lr: float = Field(default=4e-3, gt=0, le=1, description="Peak of the one-cycle schedule.")
    weight_decay: float = Field(default=1e-4, ge=0)
    seed: int = Field(default=0, ge=0)
    device: DeviceChoice = "auto"
    augment: bool = Field(default=True, description="Affine moves and stroke-width changes.")
    limit_train: int | None = Field(default=None, ge=1, description="Train on a subset.")
    valid_size: int = Field(default=5000, ge=1, le=30000, description="Held out from training.")
    workers: int = Field(default=2, ge=0, le=16, description="DataLoader worker processes.")

    @model_validator(mode="before")
    @classmethod
    def _architecture_defaults(cls, data: Any) -> Any:
        """Fill unset (or None) values from the architecture's defaults."""
        if not isinstance(data, dict):
            return data
        given = {key: value for key, value in data.items() if value is not None}
        return {**ARCH_DEFAULTS.get(str(given.get("arch", "cnn")), {}), **given}
