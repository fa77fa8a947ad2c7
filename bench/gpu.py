"""`python -m bench gpu` (`make gpu-check`): the CUDA path of the inference worker and the trainer,
measured on a machine with an NVIDIA GPU against that machine's own CPU.

1. The CNN trains for one epoch on CUDA and on the CPU (seconds per epoch, same data and seed).
2. The CUDA-trained model is exported to ONNX as the trainer exports it.
3. Raw ONNX Runtime, CUDA execution provider against CPU, at batch 1, 64 and 1,024.
4. The inference worker's own loading (`build_model` with PREFER_GPU on): the provider it really
   got, and its batch scoring rate.
5. Top-1 answers of CUDA and CPU on the 10,000 MNIST test images (they may differ only where the
   model hesitates between two digits: see AGREEMENT).

Without a GPU it stops at once with the reason (exit status 2). `--cpu-fallback` runs every step
with the CPU standing in for the GPU, so the script itself is tested on machines without one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench import config
from bench.machine import describe
from bench.stats import spread

if TYPE_CHECKING:
    import torch
    from trainer.data import MnistTensors

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# CUDA and CPU kernels sum in different orders; top-1 may flip only where the two best classes
# are this close (probability margin), and on at most this share of the test images.
AGREEMENT_MARGIN = 1e-3
AGREEMENT_MAX_SHARE = 0.001


class GpuUnavailableError(RuntimeError):
    """No usable NVIDIA GPU here; the message says what was looked for."""


@dataclass(frozen=True)
class GpuSizes:
    """How much each step measures."""

    batches: tuple[int, ...] = (1, 64, 1024)
    seconds: float = 2.0
    repeats: int = 3
    train_limit: int | None = None  # all 55,000 training images
    compare_images: int = 10_000
    cpu_threads: int = 0  # 0: every core


FULL = GpuSizes()
SMALL = GpuSizes(seconds=0.2, repeats=1, train_limit=1024, compare_images=512)


@dataclass(frozen=True)
class Devices:
    """What this machine offers: torch's CUDA device and onnxruntime's providers."""

    torch_cuda: str | None
    ort_providers: list[str]

    @classmethod
    def probe(cls) -> Devices:
        import onnxruntime as ort
        import torch

        name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        return cls(name, list(ort.get_available_providers()))

    @property
    def ort_cuda(self) -> bool:
        return CUDA in self.ort_providers

    def require(self, *, cpu_fallback: bool) -> None:
        """Refuse to run without a GPU, unless the CPU may stand in for it."""
        if self.torch_cuda or self.ort_cuda or cpu_fallback:
            return
        raise GpuUnavailableError(
            "no NVIDIA GPU here: torch sees no CUDA device and onnxruntime offers only "
            f"{', '.join(self.ort_providers)}. Run `make gpu-check` on a machine with an NVIDIA "
            "GPU (and onnxruntime-gpu for the ONNX steps), or pass --cpu-fallback to test the "
            "script with the CPU standing in."
        )


def _rate(work: Callable[[], int], seconds: float) -> float:
    work()  # warm
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        done += work()
    return done / elapsed


def train_epoch_seconds(
    data: MnistTensors, device: str, sizes: GpuSizes
) -> tuple[dict[str, Any], torch.nn.Module]:
    """One CNN epoch on `device` with the trainer's own loop; its time and validation accuracy."""
    import torch
    from trainer.config import TrainConfig
    from trainer.models import build_model
    from trainer.training import fit, seed_everything, split_train_valid

    train_config = TrainConfig(
        arch="cnn",
        epochs=1,
        limit_train=sizes.train_limit,
        valid_size=min(5000, len(data.labels) // 5),
        workers=min(4, os.cpu_count() or 1),
    )
    seed_everything(train_config.seed)
    model = build_model("cnn").to(torch.device(device))
    split = split_train_valid(data, train_config)
    started = time.perf_counter()
    (metrics,) = fit(model, split, train_config, torch.device(device), _Quiet())
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {
        "device": device,
        "images": len(split.train.labels),
        "seconds": round(seconds, 3),
        "images_per_s": round(len(split.train.labels) / seconds, 1),
        "valid_accuracy": round(metrics.valid_accuracy, 5),
    }, model


class _Quiet:
    def stage(self, message: str) -> None: ...
    def epoch_started(self, epoch: int, epochs: int, batches: int) -> None: ...
    def batch_finished(self, loss: float) -> None: ...
    def epoch_finished(self, metrics: object) -> None: ...


def _session(onnx: bytes, provider: str, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(onnx, options, providers=[provider])


def raw_rates(
    onnx: bytes, pixels: np.ndarray[Any, Any], providers: list[str], sizes: GpuSizes
) -> dict[str, Any]:
    """images/s of session.run per provider and batch size (the providers take turns)."""
    sessions = {p: _session(onnx, p, sizes.cpu_threads) for p in providers}
    rates: dict[str, list[float]] = {}
    for _ in range(sizes.repeats):
        for provider, session in sessions.items():
            for size in sizes.batches:
                batch = np.resize(pixels, (size, 1, 28, 28)).astype(np.float32)

                def run(batch: np.ndarray[Any, Any] = batch, session: Any = session) -> int:
                    session.run(None, {"pixels": batch})
                    return len(batch)

                rates.setdefault(f"{provider}_batch{size}", []).append(_rate(run, sizes.seconds))
    return {key: spread(values) for key, values in rates.items()}


def worker_path(
    onnx: bytes, images: np.ndarray[Any, Any], sizes: GpuSizes, *, prefer_gpu: bool
) -> dict[str, Any]:
    """The inference worker's own loading and scoring, with PREFER_GPU as asked."""
    from mnistream_common.events import ModelRef
    from mnistream_common.storage import sha256_hex
    from mnistream_serving.batch import score_inputs
    from mnistream_serving.model import RuntimeOptions, build_model

    ref = ModelRef(name="mnist-digits", version=1, sha256=sha256_hex(onnx))
    loaded = build_model(ref, onnx, RuntimeOptions(intra_op_threads=1, prefer_gpu=prefer_gpu))
    items = [(i, bytes(images[i % len(images)].tobytes())) for i in range(64)]

    def run() -> int:
        return len(score_inputs(loaded, items).scored)

    rates = [_rate(run, sizes.seconds) for _ in range(sizes.repeats)]
    return {"prefer_gpu": prefer_gpu, "provider": loaded.provider, "batch64": spread(rates)}


def agreement(
    onnx: bytes, pixels: np.ndarray[Any, Any], providers: tuple[str, str]
) -> dict[str, Any]:
    """Top-1 answers of two providers on the same images, and whether they agree closely enough."""
    first, second = (
        np.concatenate(
            [
                _session(onnx, provider, 0).run(["probabilities"], {"pixels": chunk})[0]
                for chunk in np.array_split(pixels, max(1, len(pixels) // 1000))
            ]
        )
        for provider in providers
    )
    return {"providers": list(providers), **compare_top1(first, second)}


def compare_top1(first: np.ndarray[Any, Any], second: np.ndarray[Any, Any]) -> dict[str, Any]:
    """How two sets of probabilities for the same images differ, against AGREEMENT."""
    differ = np.flatnonzero(first.argmax(axis=1) != second.argmax(axis=1))
    top2 = np.sort(first[differ], axis=1)[:, -2:]
    margins = (top2[:, 1] - top2[:, 0]).tolist()
    within = len(differ) <= AGREEMENT_MAX_SHARE * len(first) and all(
        m < AGREEMENT_MARGIN for m in margins
    )
    return {
        "images": len(first),
        "top1_differ": len(differ),
        "differing_margins": [round(m, 6) for m in margins],
        "max_abs_probability_diff": float(np.max(np.abs(first - second))),
        "within_tolerance": within,
    }


def run_check(
    train: MnistTensors, test: MnistTensors, sizes: GpuSizes, *, cpu_fallback: bool = False
) -> dict[str, Any]:
    """Every step above; the CPU stands in for CUDA where the machine has none and
    `cpu_fallback` allows it (each result names what really ran)."""
    from trainer.export import export_onnx

    devices = Devices.probe()
    devices.require(cpu_fallback=cpu_fallback)
    gpu_device = "cuda" if devices.torch_cuda else "cpu"
    gpu_provider = CUDA if devices.ort_cuda else CPU
    results: dict[str, Any] = {
        "devices": {"torch_cuda": devices.torch_cuda, "onnxruntime": devices.ort_providers},
        "cpu_fallback": not (devices.torch_cuda or devices.ort_cuda),
    }
    trained_gpu, model = train_epoch_seconds(train, gpu_device, sizes)
    trained_cpu, _ = train_epoch_seconds(train, "cpu", sizes)
    results["train_one_epoch"] = {
        "gpu": trained_gpu,
        "cpu": trained_cpu,
        "speedup": round(trained_cpu["seconds"] / trained_gpu["seconds"], 2),
    }
    onnx = export_onnx(model)  # type: ignore[arg-type]
    images = test.images[: sizes.compare_images].numpy()
    pixels = (images.astype(np.float32) / 255.0)[:, None, :, :]
    providers = [CUDA, CPU] if devices.ort_cuda else [CPU]
    results["raw_onnxruntime"] = raw_rates(onnx, pixels, providers, sizes)
    results["worker"] = worker_path(onnx, images, sizes, prefer_gpu=True)
    results["agreement"] = agreement(onnx, pixels, (gpu_provider, CPU))
    if not devices.ort_cuda:
        results["onnxruntime_cuda_missing"] = (
            "onnxruntime here has no CUDAExecutionProvider (the CPU-only wheel); the ONNX "
            "figures are CPU only and the worker's provider shows the fallback"
        )
    return results


def load_mnist(root: Path) -> tuple[MnistTensors, MnistTensors]:
    """The MNIST training and test splits (torchvision layout under `root`)."""
    from trainer.data import load_split

    return load_split(root, train=True), load_split(root, train=False)


def write(results: dict[str, Any], out: Path, doc: Path | None) -> Path:
    """The results JSON (with the machine), and docs/gpu.md from it when `doc` is given."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    record = {"machine": describe(), "measured_at": stamp, **results}
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stamp}-gpu.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    if doc is not None:
        doc.write_text(render(record, path.name))
    return path


HOW_TO = """## How to run it

`make gpu-check` on a machine with an NVIDIA GPU, PyTorch with CUDA and onnxruntime-gpu in
place of onnxruntime (`uv pip install onnxruntime-gpu==<the locked onnxruntime version>`;
the GPU image does the same with `--build-arg ONNXRUNTIME=onnxruntime-gpu`). The ONNX timings
take under a minute; the rest is two training epochs (CUDA and CPU). Without a GPU it stops at
once and says why; `python -m bench gpu --cpu-fallback --small` runs every step on the CPU
(the unit test in tests/unit/bench/test_gpu.py does).

### On the project's lent GPU machine

That machine (an H200, Python 3.12, PyTorch 2.11 for CUDA 13, onnxruntime 1.30 CPU-only)
reaches no package registry and takes at most 64 MiB of files per command. What must travel:

- the pure-Python needs of `mnistream_common` it lacks (pydantic, pydantic-core,
  pydantic-settings, python-dotenv, structlog, annotated-types, typing-inspection, and any
  other that `python3 -c 'import mnistream_serving.batch'` names there): a few MiB of cp312
  wheels, carried in `.whl` and installed with `pip install --no-index --target`;
- MNIST (11 MiB as the four gzip IDX files), carried and pointed at with `--mnist`;
- onnxruntime-gpu: its cp312 x86-64 wheel is 243 MiB (1.31.1), four times the limit. It can
  travel in four parts of at most 61 MiB (`split -b 61M`), one per command, to one machine kept
  warm between the commands (it is given back after 30 s idle), and be joined there with `cat`
  before `pip install`. Whether it then loads depends on its CUDA major matching the machine's
  CUDA 13 libraries (the cuDNN and cuBLAS wheels PyTorch brings); the check reports the
  provider the worker really got, so a mismatch shows as `CPUExecutionProvider`, never as a
  GPU figure.

Without onnxruntime-gpu the trainer's CUDA epoch is still measured, and the ONNX figures are
marked CPU-only.
"""


def render_pending() -> str:
    """docs/gpu.md before any run on a GPU."""
    return (
        "# GPU check\n\nNo figures yet: no machine with an NVIDIA GPU has run `make gpu-check`. "
        "The script is ready, and its CPU fallback is tested.\n\n" + HOW_TO
    )


def render(record: dict[str, Any], source: str) -> str:
    """docs/gpu.md: what ran where, and the figures."""
    machine, devices = record["machine"], record["devices"]
    train = record["train_one_epoch"]
    agree = record["agreement"]
    worker = record["worker"]
    lines = [
        "# GPU check",
        "",
        f"Generated by `make gpu-check` from `{source}` ({record['measured_at']}).",
        "",
        f"- GPU (torch): {devices['torch_cuda'] or 'none'}",
        f"- onnxruntime providers: {', '.join(devices['onnxruntime'])}",
        f"- CPU: {machine['cpu']}, {machine['cores']} cores",
    ]
    if record["cpu_fallback"]:
        lines += ["", "**No GPU was used: the CPU stood in for it (`--cpu-fallback`).**"]
    if "onnxruntime_cuda_missing" in record:
        lines += ["", f"Note: {record['onnxruntime_cuda_missing']}."]
    lines += [
        "",
        "## Training, one CNN epoch",
        "",
        "| device | images | seconds | images/s | valid accuracy |",
        "|---|---|---|---|---|",
    ]
    for side in ("gpu", "cpu"):
        t = train[side]
        lines.append(
            f"| {t['device']} | {t['images']} | {t['seconds']} | {t['images_per_s']} "
            f"| {t['valid_accuracy']} |"
        )
    lines += [
        "",
        f"Speed-up: {train['speedup']}×.",
        "",
        "## ONNX Runtime, images/s (median of runs)",
        "",
        "| provider | batch | images/s |",
        "|---|---|---|",
    ]
    for key, value in record["raw_onnxruntime"].items():
        provider, batch = key.rsplit("_batch", 1)
        lines.append(f"| {provider} | {batch} | {value['median']:,.0f} |")
    lines += [
        "",
        "## The inference worker's path (PREFER_GPU=true)",
        "",
        f"Provider it got: `{worker['provider']}`; batch of 64 scored at "
        f"{worker['batch64']['median']:,.0f} images/s.",
        "",
        "## Top-1 agreement",
        "",
        f"{' vs '.join(agree['providers'])} on {agree['images']:,} MNIST test images: "
        f"{agree['top1_differ']} differ (tolerance: at most {AGREEMENT_MAX_SHARE:.1%} of the "
        f"images, each with a top-2 margin under {AGREEMENT_MARGIN}); largest probability "
        f"difference {agree['max_abs_probability_diff']:.2e}; "
        f"{'within' if agree['within_tolerance'] else 'OUTSIDE'} tolerance.",
        "",
        HOW_TO,
    ]
    return "\n".join(lines)


def main(*, small: bool, cpu_fallback: bool, mnist: Path | None, out: Path | None) -> Path:
    """The command: measure, write the JSON and (on a real GPU) docs/gpu.md."""
    Devices.probe().require(cpu_fallback=cpu_fallback)
    sizes = SMALL if small else FULL
    if mnist is None:
        from trainer.settings import Settings

        mnist = Settings().mnist_root
    train, test = load_mnist(mnist)
    results = run_check(train, test, sizes, cpu_fallback=cpu_fallback)
    doc = None if results["cpu_fallback"] else config.DOCS / "gpu.md"
    return write(results, out or config.RESULTS, doc)
