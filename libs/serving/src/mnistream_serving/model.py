"""A verified, warmed-up ONNX model and batched prediction with it."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from mnistream_common.events import ModelRef
from mnistream_common.storage import sha256_hex

INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

Probabilities = npt.NDArray[np.float32]


class ModelRejectedError(Exception):
    """A model that must not serve: wrong bytes, unreadable, or failing its warm-up."""


def choose_providers(available: list[str], *, prefer_gpu: bool) -> list[str]:
    """CUDA first when it is available and wanted, CPU always as the fallback."""
    if prefer_gpu and CUDA in available:
        return [CUDA, CPU]
    return [CPU]


@dataclass(frozen=True)
class RuntimeOptions:
    """How sessions are built on this machine."""

    intra_op_threads: int = 1
    prefer_gpu: bool = True
    warmup_batch: int = 64


@dataclass
class LoadedModel:
    """One model version, ready to serve."""

    ref: ModelRef
    session: Any  # onnxruntime.InferenceSession (untyped)
    provider: str
    loaded_at: float = field(default_factory=time.monotonic)

    def predict(self, pixels: npt.NDArray[np.float32]) -> Probabilities:
        """Probabilities for a (N, 1, 28, 28) batch, in one session.run."""
        outputs = self.session.run([OUTPUT_NAME], {INPUT_NAME: pixels})
        result: Probabilities = np.asarray(outputs[0], dtype=np.float32)
        return result


def build_model(ref: ModelRef, onnx_bytes: bytes, options: RuntimeOptions) -> LoadedModel:
    """Verify the bytes against the sha256, build a session, warm it up; or raise why not."""
    actual = sha256_hex(onnx_bytes)
    if actual != ref.sha256:
        raise ModelRejectedError(
            f"sha256 mismatch for {ref.name} v{ref.version}: expected {ref.sha256}, got {actual}"
        )
    session = _session(onnx_bytes, options)
    _check_signature(session, ref)
    model = LoadedModel(ref, session, session.get_providers()[0])
    _warm_up(model, options.warmup_batch)
    return model


def _session(onnx_bytes: bytes, options: RuntimeOptions) -> Any:
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = options.intra_op_threads
    session_options.inter_op_num_threads = 1
    session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The arena keeps the peak of every batch shape; small models do not need it (RSS target).
    session_options.enable_cpu_mem_arena = False
    providers = choose_providers(ort.get_available_providers(), prefer_gpu=options.prefer_gpu)
    # Built from bytes, a model's external-data references resolve against the working
    # directory (the repo root, holding .env and .data/). From a file alone in an empty folder
    # they resolve to nothing, so a model that is not self-contained is refused.
    with tempfile.TemporaryDirectory(prefix="mnistream-model-") as folder:
        path = Path(folder) / "model.onnx"
        path.write_bytes(onnx_bytes)
        try:
            return ort.InferenceSession(str(path), session_options, providers=providers)
        except Exception as exc:  # onnxruntime raises several untyped error classes
            raise ModelRejectedError(
                f"onnxruntime cannot load the model (it must be one self-contained file, "
                f"without external data): {exc}"
            ) from exc


def _check_signature(session: Any, ref: ModelRef) -> None:
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [INPUT_NAME] or OUTPUT_NAME not in outputs:
        raise ModelRejectedError(
            f"{ref.name} v{ref.version} has inputs {inputs} and outputs {outputs}; "
            f"expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}"
        )


def _warm_up(model: LoadedModel, batch: int) -> None:
    for size in sorted({1, batch}):
        try:
            probabilities = model.predict(np.zeros((size, 1, 28, 28), dtype=np.float32))
        except Exception as exc:  # any runtime failure rejects the model
            raise ModelRejectedError(f"warm-up run failed: {exc}") from exc
        if probabilities.shape != (size, 10) or not np.allclose(
            probabilities.sum(axis=1), 1.0, atol=1e-3
        ):
            raise ModelRejectedError(
                f"warm-up output has shape {probabilities.shape} and row sums "
                f"{probabilities.sum(axis=1)[:3]}; expected ({size}, 10) probabilities"
            )
