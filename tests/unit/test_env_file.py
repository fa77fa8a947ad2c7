"""README, "Replay": a setting put in `.env` reaches every console script, without honcho or a
harness exporting it first."""

from __future__ import annotations

import importlib
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

# Each console script of the workspace and the settings it reads.
SETTINGS = {
    "gateway": "gateway.settings",
    "history-service": "history_service.settings",
    "inference-worker": "inference_worker.settings",
    "rescore-worker": "rescore_worker.settings",
    "mnistream": "mnistream_cli.settings",
}
OURS = {
    "mnistream-cli",
    "gateway",
    "history-service",
    "inference-worker",
    "rescore-worker",
    "mnistream-system",
    "trainer",
}
ENV = "LOG_LEVEL=WARNING\nKAFKA_BOOTSTRAP_SERVERS=kafka.example:9094\n"


def test_every_console_script_of_the_workspace_is_checked() -> None:
    scripts = {
        entry.name
        for entry in metadata.entry_points(group="console_scripts")
        if entry.dist is not None and entry.dist.name in OURS
    }
    assert scripts == {*SETTINGS, "mnistream-system"}


@pytest.mark.parametrize("script", sorted(SETTINGS))
def test_each_service_reads_its_settings_from_dot_env(
    script: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(ENV)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    settings_class: type[BaseSettings] = importlib.import_module(SETTINGS[script]).Settings
    settings = settings_class()
    assert settings.model_dump()["log_level"] == "WARNING"
    assert settings.model_dump()["kafka_bootstrap_servers"] == "kafka.example:9094"


def test_the_cli_finds_the_admin_token_in_dot_env(tmp_path: Path) -> None:
    """`uv run mnistream replay history` with ADMIN_TOKEN only in .env gets past the token check
    and on to history-service (here: nothing listens, so it says so)."""
    (tmp_path / ".env").write_text("ADMIN_TOKEN=from-dot-env\nHISTORY_URL=http://127.0.0.1:9\n")
    mnistream = Path(sys.executable).parent / "mnistream"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [str(mnistream), "replay", "history", "--from-beginning"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "needs the admin token" not in output
    assert "start it first" in output


def test_the_runner_probes_the_ports_dot_env_gives_the_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnistream_system import __main__ as runner

    monkeypatch.setattr(runner, "ROOT", tmp_path)
    (tmp_path / ".env").write_text("GATEWAY_PORT=8100\nINFERENCE_WORKERS=3\n")
    monkeypatch.delenv("GATEWAY_PORT", raising=False)
    monkeypatch.delenv("INFERENCE_WORKERS", raising=False)
    assert runner.setting("GATEWAY_PORT", 8000) == 8100
    assert runner.setting("INFERENCE_WORKERS", 2) == 3
    assert runner.setting("HISTORY_PORT", 8001) == 8001
    monkeypatch.setenv("GATEWAY_PORT", "8200")
    assert runner.setting("GATEWAY_PORT", 8000) == 8200
