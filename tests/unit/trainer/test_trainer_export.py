"""The ONNX file has the documented names and a dynamic batch, and agrees with PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from trainer.export import (
    BATCH_AXIS,
    INPUT_NAME,
    OUTPUT_NAME,
    ParityError,
    check_parity,
    export_onnx,
    onnx_session,
)
from trainer.models import CNN, MLP


@pytest.fixture(scope="module")
def tiny_mlp() -> MLP:
    torch.manual_seed(0)
    return MLP(hidden=8)


@pytest.fixture(scope="module")
def tiny_mlp_onnx(tiny_mlp: MLP) -> bytes:
    return export_onnx(tiny_mlp)


def test_onnx_has_one_pixels_input_and_one_probabilities_output(tiny_mlp_onnx: bytes) -> None:
    graph = onnx.load_from_string(tiny_mlp_onnx).graph
    assert [i.name for i in graph.input] == [INPUT_NAME]
    assert [o.name for o in graph.output] == [OUTPUT_NAME]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == BATCH_AXIS
    assert [d.dim_value for d in dims[1:]] == [1, 28, 28]
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_onnx_opset_is_at_least_17_and_weights_are_inside(tiny_mlp_onnx: bytes) -> None:
    model = onnx.load_from_string(tiny_mlp_onnx)
    default_domain = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    assert default_domain and default_domain[0] >= 17
    assert all(not t.external_data for t in model.graph.initializer)


@pytest.mark.parametrize("batch", [1, 7, 256])
def test_onnx_runs_at_any_batch_size(tiny_mlp_onnx: bytes, batch: int) -> None:
    pixels = np.random.default_rng(batch).random((batch, 1, 28, 28), dtype=np.float32)
    (probabilities,) = onnx_session(tiny_mlp_onnx).run([OUTPUT_NAME], {INPUT_NAME: pixels})
    assert probabilities.shape == (batch, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_parity_holds_for_the_exported_model(tiny_mlp: MLP, tiny_mlp_onnx: bytes) -> None:
    parity = check_parity(tiny_mlp, tiny_mlp_onnx, torch.rand(256, 1, 28, 28))
    assert parity.samples == 256
    assert parity.max_abs_diff <= 1e-4


def test_parity_holds_for_the_cnn_in_eval_mode() -> None:
    torch.manual_seed(1)
    model = CNN()
    model.train()  # export must switch batch norm and dropout to inference behaviour itself
    parity = check_parity(model, export_onnx(model), torch.rand(64, 1, 28, 28))
    assert parity.max_abs_diff <= 1e-4
    assert model.training, "exporting must not change the model being trained"


def test_parity_fails_when_the_onnx_is_another_model(tiny_mlp: MLP) -> None:
    torch.manual_seed(99)
    other = export_onnx(MLP(hidden=8))
    with pytest.raises(ParityError, match="not registered"):
        check_parity(tiny_mlp, other, torch.rand(256, 1, 28, 28))


def test_export_is_reproducible(tiny_mlp: MLP, tiny_mlp_onnx: bytes) -> None:
    assert export_onnx(tiny_mlp) == tiny_mlp_onnx
