"""Serving a model: the provider choice, and the checks a model must pass before it serves."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import onnx
import pytest
from mnistream_common.storage import ObjectStore, S3Uri
from mnistream_serving.loader import fetch_and_build
from mnistream_serving.model import (
    CPU,
    CUDA,
    ModelRejectedError,
    RuntimeOptions,
    build_model,
    choose_providers,
)
from onnx.external_data_helper import convert_model_to_external_data

from tests.helpers import model_ref, tiny_onnx_model

OPTIONS = RuntimeOptions(intra_op_threads=1, prefer_gpu=False, warmup_batch=8)


@pytest.mark.parametrize(
    ("available", "prefer_gpu", "expected"),
    [
        ([CUDA, CPU], True, [CUDA, CPU]),
        (["TensorrtExecutionProvider", CUDA, CPU], True, [CUDA, CPU]),
        ([CUDA, CPU], False, [CPU]),
        ([CPU], True, [CPU]),
        (["AzureExecutionProvider", CPU], True, [CPU]),
        ([], True, [CPU]),
    ],
    ids=["gpu", "gpu-among-others", "gpu-not-wanted", "cpu-only", "azure-cpu", "nothing-listed"],
)
def test_choose_providers(available: list[str], prefer_gpu: bool, expected: list[str]) -> None:
    assert choose_providers(available, prefer_gpu=prefer_gpu) == expected


def test_a_verified_model_serves_probabilities() -> None:
    onnx_bytes = tiny_onnx_model(1)
    ref = model_ref(onnx_bytes, version=4)

    model = build_model(ref, onnx_bytes, OPTIONS)
    probabilities = model.predict(np.random.default_rng(0).random((5, 1, 28, 28), np.float32))

    assert model.ref == ref
    assert model.provider == CPU
    assert probabilities.shape == (5, 10)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_bytes_that_do_not_match_the_sha256_are_refused() -> None:
    ref = model_ref(tiny_onnx_model(1), version=2)
    other = tiny_onnx_model(2)

    with pytest.raises(ModelRejectedError, match=r"sha256 mismatch for mnist-digits v2: expected"):
        build_model(ref, other, OPTIONS)


def test_bytes_that_are_not_onnx_are_refused() -> None:
    garbage = b"this is not an onnx model"

    with pytest.raises(ModelRejectedError, match="onnxruntime cannot load the model"):
        build_model(model_ref(garbage), garbage, OPTIONS)


@pytest.mark.parametrize(
    "onnx_bytes",
    [tiny_onnx_model(1, input_name="image"), tiny_onnx_model(1, output_name="logits")],
    ids=["wrong-input-name", "wrong-output-name"],
)
def test_a_model_with_the_wrong_signature_is_refused(onnx_bytes: bytes) -> None:
    with pytest.raises(ModelRejectedError, match="expected input 'pixels' and output"):
        build_model(model_ref(onnx_bytes), onnx_bytes, OPTIONS)


def test_a_model_whose_output_is_not_probabilities_is_refused() -> None:
    raw_scores = tiny_onnx_model(1, softmax=False)

    with pytest.raises(ModelRejectedError, match=r"warm-up output .* expected \(1, 10\) prob"):
        build_model(model_ref(raw_scores), raw_scores, OPTIONS)


def test_a_model_with_external_data_is_refused_even_beside_its_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its weights in `weights.bin` in the working directory (where .env lives for a worker):
    built from bytes, onnxruntime would read them from there."""
    model = onnx.load_from_string(tiny_onnx_model(2))
    convert_model_to_external_data(model, location="weights.bin", size_threshold=0)
    onnx.save_model(model, tmp_path / "model.onnx")  # writes weights.bin beside it
    onnx_bytes = onnx.load(tmp_path / "model.onnx", load_external_data=False).SerializeToString()
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ModelRejectedError, match="self-contained"):
        build_model(model_ref(onnx_bytes, version=2), onnx_bytes, OPTIONS)


async def test_a_promotion_outside_the_artifacts_bucket_is_refused_unread() -> None:
    class Store:
        reads: list[S3Uri] = []

        async def get(self, uri: S3Uri) -> bytes:
            self.reads.append(uri)
            return tiny_onnx_model(1)

    store = Store()
    onnx_bytes = tiny_onnx_model(1)
    with pytest.raises(ModelRejectedError, match="outside the artifacts bucket 'mlflow'"):
        await fetch_and_build(
            cast(ObjectStore, store),
            model_ref(onnx_bytes, version=1),
            "s3://drawings/0190/2f/abc.png",
            OPTIONS,
            "mlflow",
            registry=None,
        )
    assert store.reads == []
    loaded = await fetch_and_build(
        cast(ObjectStore, store),
        model_ref(onnx_bytes, 1),
        "s3://mlflow/m.onnx",
        OPTIONS,
        "mlflow",
        registry=None,
    )
    assert loaded.ref.version == 1
