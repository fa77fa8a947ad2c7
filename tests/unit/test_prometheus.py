"""Prometheus' configuration and alert rules (infra/prometheus), checked offline with promtool:
the configuration loads, and each alert fires, and stays quiet, as tests/prometheus/alerts_test.yml
says (`promtool test rules` evaluates the rules over the series it gives)."""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

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


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_the_compose_configuration_loads_and_scrapes_each_service_at_its_port() -> None:
    path = ROOT / "infra" / "prometheus" / "prometheus-compose.yml"
    done = run("check", "config", "--syntax-only", path)
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load(path.read_text())
    static = {
        t
        for c in config["scrape_configs"]
        for s in c.get("static_configs", [])
        for t in s["targets"]
    }
    dns = {
        f"{name}:{d['port']}"
        for c in config["scrape_configs"]
        for d in c.get("dns_sd_configs", [])
        for name in d["names"]
    }
    services = compose()["services"]
    ports = {
        "gateway": services["gateway"]["environment"]["GATEWAY_PORT"],
        "history-service": services["history-service"]["environment"]["HISTORY_PORT"],
        "inference-worker": services["inference-worker"]["environment"]["INFERENCE_HTTP_PORT"],
        "rescore-worker": services["rescore-worker"]["environment"]["RESCORE_HTTP_PORT"],
    }
    assert static | dns == {f"{name}:{port}" for name, port in ports.items()}
    mounted = compose()["services"]["prometheus"]["volumes"]
    assert "./infra/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounted


def test_grafana_is_provisioned_with_the_dashboard_and_the_datasource_it_asks_for() -> None:
    provisioning = ROOT / "infra" / "grafana" / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    [provider] = yaml.safe_load((provisioning / "dashboards" / "mnistream.yml").read_text())[
        "providers"
    ]
    dashboard = json.loads(
        (ROOT / "infra" / "grafana" / "dashboards" / "mnistream.json").read_text()
    )
    refs = [p["datasource"] for p in dashboard["panels"] if p["type"] != "row"]
    refs += [t["datasource"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert refs and all(r == {"type": "prometheus", "uid": source["uid"]} for r in refs)
    assert source["url"] == "http://prometheus:9090"
    mounts = compose()["services"]["grafana"]["volumes"]
    assert f"./infra/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./infra/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
