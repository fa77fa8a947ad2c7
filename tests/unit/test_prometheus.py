"""Prometheus' configuration and alert rules (infra/prometheus), checked offline with promtool:
the configuration loads, and each alert fires, and stays quiet, as tests/prometheus/alerts_test.yml
says (`promtool test rules` evaluates the rules over the series it gives)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def stack_env() -> dict[str, str]:
    """What infra/stack.sh would use: the pinned Prometheus version, the tools' cache."""
    done = subprocess.run(
        [ROOT / "infra" / "stack.sh", "env"], capture_output=True, text=True, check=True
    )
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def promtool() -> Path:
    env = stack_env()
    path = Path(env["MNISTREAM_CACHE"]) / "bin" / f"promtool-{env['PROMETHEUS_VERSION']}"
    if not path.exists():
        pytest.fail(f"promtool is not built at {path}: run `make observability-tools`")
    return path


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool()), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_the_configuration_and_its_rules_load() -> None:
    done = run("check", "config", ROOT / "infra" / "prometheus" / "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 5 rules found" in done.stdout + done.stderr, done.stdout + done.stderr


def test_each_alert_fires_when_it_should_and_only_then() -> None:
    done = run("test", "rules", ROOT / "tests" / "prometheus" / "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout, done.stdout
