"""`make gpu-check` where there is no GPU: a clear refusal, and every step on the CPU fallback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import __main__ as bench_main
from bench import gpu
from tests.unit.trainer.digits import mnist_like

NO_GPU = gpu.Devices(torch_cuda=None, ort_providers=[gpu.CPU])
TINY = gpu.GpuSizes(batches=(1, 64), seconds=0.05, repeats=1, train_limit=256, compare_images=200)


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine as one without a GPU, whatever it really has."""
    monkeypatch.setattr(gpu.Devices, "probe", classmethod(lambda cls: NO_GPU))


@pytest.mark.usefixtures("no_gpu")
def test_without_a_gpu_the_command_stops_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "argv", ["bench", "gpu", "--out", str(tmp_path)])
    assert bench_main.main() == 2
    message = capsys.readouterr().err
    assert "no NVIDIA GPU here" in message
    assert "--cpu-fallback" in message
    assert not list(tmp_path.iterdir())


def test_a_machine_with_either_cuda_side_passes_the_gate() -> None:
    gpu.Devices("NVIDIA H200", [gpu.CPU]).require(cpu_fallback=False)
    gpu.Devices(None, [gpu.CUDA, gpu.CPU]).require(cpu_fallback=False)
    with pytest.raises(gpu.GpuUnavailableError):
        NO_GPU.require(cpu_fallback=False)


@pytest.mark.usefixtures("no_gpu")
def test_the_cpu_fallback_runs_every_step_and_says_so(tmp_path: Path) -> None:
    results = gpu.run_check(mnist_like(400), mnist_like(200, seed=1), TINY, cpu_fallback=True)

    assert results["cpu_fallback"] is True
    assert results["worker"]["provider"] == gpu.CPU
    assert set(results["raw_onnxruntime"]) == {
        "CPUExecutionProvider_batch1",
        "CPUExecutionProvider_batch64",
    }
    assert results["agreement"]["images"] == 200
    assert results["agreement"]["top1_differ"] == 0
    assert results["train_one_epoch"]["gpu"]["device"] == "cpu"
    assert "onnxruntime_cuda_missing" in results
    path = gpu.write(results, tmp_path, tmp_path / "gpu.md")
    assert json.loads(path.read_text())["worker"]["provider"] == gpu.CPU
    page = (tmp_path / "gpu.md").read_text()
    assert "No GPU was used" in page
    assert "| CPUExecutionProvider | 64 |" in page


def test_top1_agreement_allows_only_close_calls() -> None:
    probabilities = np.full((1000, 10), 0.05, dtype=np.float32)
    probabilities[:, 3] = 0.55
    assert gpu.compare_top1(probabilities, probabilities)["within_tolerance"]

    close = probabilities.copy()
    close[0, 3], close[0, 5] = 0.3002, 0.3
    other = close.copy()
    other[0, 3], other[0, 5] = 0.3, 0.3002
    near = gpu.compare_top1(close, other)
    assert (near["top1_differ"], near["within_tolerance"]) == (1, True)

    confident = probabilities.copy()
    confident[0, 3], confident[0, 5] = 0.05, 0.55
    far = gpu.compare_top1(probabilities, confident)
    assert (far["top1_differ"], far["within_tolerance"]) == (1, False)
