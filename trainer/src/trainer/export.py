"""ONNX export of a trained model, and the parity check that guards registration.

The file has one input `pixels` float32 [batch, 1, 28, 28] and one output `probabilities`
float32 [batch, 10]; `batch` is dynamic. Workers and the promote CLI rely on these names.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass
from typing import Final

import numpy as np
import onnx
import onnxruntime as ort
import torch

from trainer.models import DigitClassifier

INPUT_NAME: Final = "pixels"
OUTPUT_NAME: Final = "probabilities"
BATCH_AXIS: Final = "batch"
OPSET: Final = 18
PARITY_TOLERANCE: Final = 1e-4
PARITY_SAMPLES: Final = 256
INPUT_SPEC: Final = (
    "pixels: float32[N,1,28,28] in [0,1], ink bright on black, digit fitted into 20x20 and "
    "centred by mass in 28x28 (mnistream_common.preprocessing.preprocess); the model "
    "normalises internally"
)
OUTPUT_SPEC: Final = "probabilities: float32[N,10], softmax over the digits 0-9"


class ParityError(RuntimeError):
    """ONNX Runtime and PyTorch disagree on the same inputs; the model must not be registered."""


@dataclass(frozen=True)
class Parity:
    """How far ONNX Runtime's outputs are from PyTorch's."""

    max_abs_diff: float
    samples: int


def export_onnx(model: DigitClassifier) -> bytes:
    """The model as a self-contained ONNX file (weights inside, dynamic batch axis)."""
    # Export a CPU copy in eval mode: batch norm and dropout behave as at inference, and the
    # model being trained is left untouched.
    frozen = copy.deepcopy(model).cpu().eval()
    example = torch.zeros(2, 1, 28, 28)
    program = torch.onnx.export(
        frozen,
        (example,),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=OPSET,
        dynamo=True,
        verbose=False,
        external_data=False,
        dynamic_shapes=({0: torch.export.Dim(BATCH_AXIS)},),
    )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    proto = program.model_proto
    onnx.checker.check_model(proto)
    buffer = io.BytesIO()
    onnx.save_model(proto, buffer)
    return buffer.getvalue()


def onnx_session(onnx_bytes: bytes) -> ort.InferenceSession:
    """A CPU ONNX Runtime session for the file's bytes."""
    return ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])


def check_parity(model: DigitClassifier, onnx_bytes: bytes, pixels: torch.Tensor) -> Parity:
    """Compare ONNX Runtime with PyTorch on `pixels`; raise `ParityError` beyond tolerance."""
    frozen = copy.deepcopy(model).cpu().eval()
    with torch.inference_mode():
        expected = frozen(pixels.cpu()).numpy()
    (actual,) = onnx_session(onnx_bytes).run([OUTPUT_NAME], {INPUT_NAME: pixels.cpu().numpy()})
    if actual.shape != expected.shape:
        raise ParityError(f"ONNX output shape {actual.shape} != PyTorch {expected.shape}")
    diff = float(np.max(np.abs(np.asarray(actual) - expected)))
    if not diff <= PARITY_TOLERANCE:
        raise ParityError(
            f"ONNX Runtime and PyTorch differ by up to {diff:.2e} on {len(pixels)} images "
            f"(tolerance {PARITY_TOLERANCE:.0e}); the model was not registered"
        )
    return Parity(diff, len(pixels))
