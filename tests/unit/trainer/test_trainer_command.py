"""`mnistream train` is wired into the CLI without making the other commands import torch."""

from __future__ import annotations

import subprocess
import sys

from mnistream_cli.app import app
from typer.testing import CliRunner


def test_cli_does_not_import_torch_until_train_runs() -> None:
    code = "import sys, mnistream_cli.app; print('torch' in sys.modules, 'trainer' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]


def test_train_command_offers_the_documented_options() -> None:
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--arch", "--epochs", "--hidden", "--batch-size", "--lr", "--seed", "--device",
                   "--limit-train"):  # fmt: skip
        assert option in result.output


def test_invalid_options_are_refused_before_training() -> None:
    result = CliRunner().invoke(app, ["train", "--epochs", "0"])
    assert result.exit_code == 1
    assert "--epochs" in result.output
