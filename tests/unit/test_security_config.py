"""Static security checks (no Docker engine here): compose's production override refuses the
development credentials, consoles are bound to localhost, and the public API has no admin route.

Compose's variable interpolation is simulated (`$$`, `${VAR}`, `${VAR:-default}`,
`${VAR:?error}` and friends) and the credentials check is run with the environment Compose
would give its container.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from gateway.app import create_app
from gateway.settings import Settings as GatewaySettings

ROOT = Path(__file__).resolve().parents[2]
SECRETS = (
    "S3_SECRET_ACCESS_KEY",
    "POSTGRES_PASSWORD",
    "HISTORY_S3_SECRET",
    "INFERENCE_S3_SECRET",
    "RESCORE_S3_SECRET",
    "KAFKA_SASL_PASSWORD",
    "GATEWAY_KAFKA_SECRET",
    "HISTORY_KAFKA_SECRET",
    "INFERENCE_KAFKA_SECRET",
    "RESCORE_KAFKA_SECRET",
    "GRAFANA_ADMIN_PASSWORD",
)
LOCALHOST = "127.0.0.1"

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    """Compose refuses the file: a required variable is missing (`${VAR:?message}`)."""


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation over every string of a loaded compose file."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: _substitute(m, env), value)
    return value


def _substitute(match: re.Match[str], env: dict[str, str]) -> str:
    if match["escaped"]:
        return "$"
    name = match["braced"] or match["plain"]
    op, arg = match["op"], match["arg"] or ""
    present = name in env and (env[name] != "" or not (op or "").startswith(":"))
    if op in (":-", "-"):
        return env[name] if present else arg
    if op in (":?", "?"):
        if not present:
            raise InterpolationError(f"required variable {name} is missing a value: {arg}")
        return env[name]
    if op in (":+", "+"):
        return arg if present else ""
    return env.get(name, "")


def compose_file(name: str) -> dict[str, Any]:
    """A compose file as YAML (anchors and merge keys resolved, not yet interpolated)."""
    loaded: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return loaded


def development_defaults() -> dict[str, str]:
    """The default of each secret, as docker-compose.yml spells it (`${VAR:-default}`)."""
    text = (ROOT / "docker-compose.yml").read_text()
    defaults = {}
    for secret in SECRETS:
        found = set(re.findall(rf"\$\{{{secret}:-([^}}]*)\}}", text))
        assert len(found) == 1, f"{secret} has one development default, found {found}"
        defaults[secret] = found.pop()
    return defaults


def env_example() -> dict[str, str]:
    """The values .env.example suggests."""
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if re.match(r"^[A-Z_][A-Z0-9_]*=", line):
            key, _, value = line.partition("=")
            values[key] = value.split("  #")[0].strip()
    return values


def run_credentials_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the production credentials check as its container would, with `env` in .env."""
    service = interpolate(compose_file("docker-compose.prod.yml"), env)["services"][
        "credentials-check"
    ]
    command = service["command"]
    assert command[:2] == ["sh", "-c"], command
    return subprocess.run(
        ["sh", "-c", command[2]],
        env={"PATH": "/usr/bin:/bin", **service["environment"]},
        capture_output=True,
        text=True,
        timeout=10,
    )


def test_production_refuses_to_start_with_secrets_unset() -> None:
    for missing in SECRETS:
        env = {s: "a-long-secret-of-our-own" for s in SECRETS if s != missing}
        with pytest.raises(InterpolationError, match=missing):
            interpolate(compose_file("docker-compose.prod.yml"), env)


@pytest.mark.parametrize("source", ["docker-compose.yml defaults", ".env.example"])
def test_production_refuses_the_development_credentials(source: str) -> None:
    values = development_defaults() if source.endswith("defaults") else env_example()
    env = {s: values[s] for s in SECRETS if s in values}
    env.setdefault("POSTGRES_PASSWORD", development_defaults()["POSTGRES_PASSWORD"])
    checked = run_credentials_check(env)
    assert checked.returncode != 0
    for secret in SECRETS:
        assert f"{secret} is the development default" in checked.stderr, checked.stderr


def test_production_refuses_short_secrets() -> None:
    checked = run_credentials_check({s: "short-1" for s in SECRETS})
    assert checked.returncode != 0
    assert "shorter than 12 characters" in checked.stderr


def test_production_starts_with_secrets_of_its_own() -> None:
    checked = run_credentials_check(
        {secret: f"{n}f1c0b7e3d2a5f44c4e8" for n, secret in enumerate(SECRETS)}
    )
    assert checked.returncode == 0, checked.stderr


def test_every_production_service_waits_for_the_credentials_check() -> None:
    base = compose_file("docker-compose.yml")["services"]
    production = compose_file("docker-compose.prod.yml")["services"]
    assert production["credentials-check"].get("restart") == "no"
    for name in base:
        gate = production.get(name, {}).get("depends_on", {}).get("credentials-check")
        assert gate == {"condition": "service_completed_successfully"}, name


def test_published_ports_bind_to_localhost_by_default() -> None:
    for name in ("docker-compose.yml", "docker-compose.prod.yml"):
        services = interpolate(compose_file(name), {s: "x" * 16 for s in SECRETS})["services"]
        for service, spec in services.items():
            for port in spec.get("ports", []):
                assert str(port).startswith(f"{LOCALHOST}:"), (name, service, port)
    base = compose_file("docker-compose.yml")["services"]
    consoles = {"minio": "9001", "mlflow": "5000"}
    for service, inside in consoles.items():
        published = [p for p in base[service]["ports"] if p.endswith(f":{inside}")]
        assert published, f"{service} console port {inside} is published"
        assert all(p.startswith("${BIND_ADDRESS:-127.0.0.1}:") for p in published), published
    assert "ports" not in base["postgres"] and "ports" not in base["kafka"]


def test_the_native_stack_binds_to_localhost() -> None:
    stack = (ROOT / "infra" / "stack.sh").read_text()
    assert '--address "127.0.0.1:$MINIO_PORT"' in stack
    assert '--console-address "127.0.0.1:$MINIO_CONSOLE_PORT"' in stack
    assert "mlflow server --host 127.0.0.1" in stack
    assert "listen_addresses=127.0.0.1" in stack
    kafka = (ROOT / "infra" / "kafka" / "server.properties").read_text()
    listeners = re.findall(r"^(?:advertised\.)?listeners=(.*)$", kafka, flags=re.MULTILINE)
    addresses = [a for line in listeners for a in line.split(",")]
    assert addresses and all("//127.0.0.1:" in a for a in addresses), addresses


ADMIN_WORDS = (
    *("promote", "rollback", "replay", "reset", "admin", "deadletter", "train"),
    *("canary", "shadow", "abort", "erase"),
)


def test_the_public_api_has_no_admin_route() -> None:
    spec = create_app(GatewaySettings()).openapi()
    writes = {
        path
        for path, item in spec["paths"].items()
        for method in item
        if method not in ("get", "head", "options")
    }
    assert writes == {"/api/predictions", "/api/digits/{digit_id}/label"}
    for path in spec["paths"]:
        assert not any(word in path.lower() for word in ADMIN_WORDS), path
