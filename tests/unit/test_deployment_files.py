"""Static checks of docker-compose.yml, the Dockerfiles and .env.example (no Docker engine here).

They catch what would only fail on a machine with Docker: a command that is not an entry point
of the workspace, an environment variable no Settings class reads, a scalable service pinned to
a name or a host port, a missing health check, torch sneaking into the inference image.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from gateway.settings import Settings as GatewaySettings
from history_service.settings import Settings as HistorySettings
from inference_worker.settings import Settings as InferenceSettings
from mnistream_cli.kafka_users import SERVICES as KAFKA_SERVICES
from mnistream_cli.kafka_users import KafkaUser
from mnistream_cli.settings import Settings as CliSettings
from mnistream_common.s3_users import S3User
from pydantic_settings import BaseSettings
from rescore_worker.settings import Settings as RescoreSettings
from trainer.settings import Settings as TrainerSettings

ROOT = Path(__file__).resolve().parents[2]
OUR_SERVICES: dict[str, type[BaseSettings]] = {
    "gateway": GatewaySettings,
    "inference-worker": InferenceSettings,
    "history-service": HistorySettings,
    "rescore-worker": RescoreSettings,
    "setup": CliSettings,
    "cli": CliSettings,
    "trainer": TrainerSettings,
    "retrain": CliSettings,  # and the trainer's: `mnistream retrain` trains in-process
}
SCALABLE = ("inference-worker", "rescore-worker")
ONE_SHOT = ("setup", "cli", "trainer", "retrain")
MEMBERS = (
    "libs/common",
    "libs/serving",
    "gateway",
    "inference-worker",
    "history-service",
    "rescore-worker",
    "trainer",
    "cli",
)


def compose(name: str = "docker-compose.yml") -> dict[str, Any]:
    """A compose file with YAML merge keys resolved."""
    loaded: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return loaded


def entry_points() -> set[str]:
    """Every console script the workspace installs."""
    scripts: set[str] = set()
    for member in MEMBERS:
        project = tomllib.loads((ROOT / member / "pyproject.toml").read_text())["project"]
        scripts |= set(project.get("scripts", {}))
    return scripts


def command_of(service: dict[str, Any]) -> str:
    """The program a service runs: its entrypoint, else its command."""
    program = service.get("entrypoint") or service.get("command")
    return str(program[0] if isinstance(program, list) else str(program).split()[0])


@pytest.mark.parametrize("name", list(OUR_SERVICES))
def test_each_command_is_an_entry_point_of_the_workspace(name: str) -> None:
    service = compose()["services"][name]
    assert command_of(service) in entry_points(), f"{name} runs {command_of(service)!r}"


@pytest.mark.parametrize("name", list(OUR_SERVICES))
def test_each_environment_variable_is_a_settings_field(name: str) -> None:
    fields = {field.upper() for field in OUR_SERVICES[name].model_fields}
    if name == "retrain":
        fields |= {field.upper() for field in TrainerSettings.model_fields}
    environment = compose()["services"][name].get("environment", {})
    unknown = sorted(set(environment) - fields)
    assert not unknown, f"{name} sets {unknown}, which its Settings do not read"


def test_every_long_running_service_has_a_health_check() -> None:
    services = compose()["services"]
    missing = [n for n, s in services.items() if n not in ONE_SHOT and "healthcheck" not in s]
    assert not missing


def test_dependencies_wait_for_health_or_completion() -> None:
    for name, service in compose()["services"].items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert rule["condition"] in ("service_healthy", "service_completed_successfully"), (
                f"{name} → {dependency}"
            )


@pytest.mark.parametrize("name", SCALABLE)
def test_scalable_services_have_no_fixed_name_or_host_port(name: str) -> None:
    service = compose()["services"][name]
    assert "container_name" not in service
    assert "ports" not in service


def test_volumes_are_named_and_nothing_binds_the_working_directory() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "${PWD}" not in text and "$PWD" not in text
    declared = set(compose()["volumes"])
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            assert source in declared or source.startswith("./infra/"), f"{name}: {volume}"


def test_published_ports_bind_to_localhost_by_default() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("${BIND_ADDRESS:-127.0.0.1}:"), f"{name}: {port}"


def test_the_gpu_variant_gives_inference_and_trainer_the_gpu_with_onnxruntime_gpu() -> None:
    services = compose("docker-compose.gpu.yml")["services"]
    for name in ("inference-worker", "trainer"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia"
    assert services["inference-worker"]["build"]["args"]["ONNXRUNTIME"] == "onnxruntime-gpu"


def test_the_dockerfile_is_multi_stage_and_non_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.MULTILINE)) >= 2
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")


def built(name: str, file: str = "docker-compose.yml") -> dict[str, Any]:
    """How compose builds a service: the one Dockerfile, with its args (and target)."""
    build: dict[str, Any] = compose(file)["services"][name]["build"]
    return build


@pytest.mark.parametrize("name", list(OUR_SERVICES))
def test_every_image_is_the_one_dockerfile_with_a_workspace_member(name: str) -> None:
    build = built(name)
    members = {
        tomllib.loads((ROOT / m / "pyproject.toml").read_text())["project"]["name"] for m in MEMBERS
    }
    assert build["dockerfile"] == "Dockerfile"
    assert build["args"]["PACKAGE"] in members, f"{name} builds {build['args']['PACKAGE']!r}"
    assert build["args"]["COMMAND"].split()[0] in entry_points()


def test_only_the_gateway_image_carries_the_web_client() -> None:
    stages = re.findall(r"^FROM \S+ AS (\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert stages[-1] == "service", "the default target is the plain service image"
    assert built("gateway")["target"] == "gateway" and "gateway" in stages
    assert all("target" not in built(n) for n in OUR_SERVICES if n != "gateway")


def locked_dependencies(package: str) -> set[str]:
    """Every package `package` pulls in, transitively, according to uv.lock."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    by_name = {p["name"]: p for p in lock["package"]}
    seen: set[str] = set()
    todo = [package]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [d["name"] for d in by_name[name].get("dependencies", [])]
    return seen


@pytest.mark.parametrize("package", ["inference-worker", "gateway", "rescore-worker"])
def test_the_live_path_never_pulls_torch(package: str) -> None:
    assert "torch" not in locked_dependencies(package)


def stack_env(env_file: Path, **environ: str) -> dict[str, str]:
    """What `infra/stack.sh env` resolves from an env file and the environment."""
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    done = subprocess.run(
        [str(ROOT / "infra" / "stack.sh"), "env"],
        env={**clean, "MNISTREAM_ENV_FILE": str(env_file), **environ},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return dict(line.split("=", 1) for line in done.stdout.splitlines())


def test_the_stack_reads_env_files_as_the_services_do(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "DATABASE_URL=postgresql+asyncpg://u:p@127.0.0.1:6543/app  # a comment, dropped\n"
        "MLFLOW_DATABASE='tracking'\n"
        "S3_ENDPOINT_URL=http://127.0.0.1:9100\n"
    )
    resolved = stack_env(env_file, S3_ENDPOINT_URL="http://127.0.0.1:9200")
    assert resolved["DATABASE_URL"] == "postgresql+asyncpg://u:p@127.0.0.1:6543/app"
    assert resolved["MLFLOW_DATABASE"] == "tracking"
    assert resolved["S3_ENDPOINT_URL"] == "http://127.0.0.1:9200", "the environment wins"


def test_the_stack_defaults_match_env_example() -> None:
    resolved = stack_env(ROOT / ".env.example")
    example = dict(
        re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=(\S*)", (ROOT / ".env.example").read_text(), re.M)
    )
    names = ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "MLFLOW_TRACKING_URI", "KAFKA_VERSION")
    for name in (*names, "PROMETHEUS_VERSION", "PROMETHEUS_PORT", "OBSERVABILITY"):
        assert resolved[name] == example[name], name


def test_env_example_lists_every_setting_with_its_default() -> None:
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
    for name, settings in OUR_SERVICES.items():
        missing = {f.upper() for f in settings.model_fields} - listed
        assert not missing, f"{name}: {sorted(missing)} missing from .env.example"


@pytest.mark.parametrize(
    ("name", "user"),
    [
        ("history-service", "history"),
        ("inference-worker", "inference"),
        ("rescore-worker", "rescore"),
    ],
)
def test_each_service_with_objects_uses_its_own_minio_user_which_setup_creates(
    name: str, user: str
) -> None:
    services = compose()["services"]
    environment = services[name]["environment"]
    secret = f"{user.upper()}_S3_SECRET"
    assert environment["S3_ACCESS_KEY_ID"] == S3User(user, "x").access_key
    assert environment["S3_SECRET_ACCESS_KEY"].startswith("${" + secret + ":-")
    assert services["setup"]["environment"][secret] == environment["S3_SECRET_ACCESS_KEY"]


def test_only_the_operator_side_holds_the_root_minio_user() -> None:
    root = "${S3_ACCESS_KEY_ID:-mnistream}"
    holders = {
        name
        for name, service in compose()["services"].items()
        if root in (service.get("environment") or {}).values()
    }
    assert holders <= {"setup", "mlflow", "cli", "trainer", "retrain", "minio"}, holders


def test_the_cluster_variant_is_three_nodes_of_one_quorum_and_clients_bootstrap_from_all() -> None:
    """docker-compose.cluster.yml: three KRaft nodes with the same voters and cluster id, topics
    of three replicas (min.insync.replicas 2), and every service of the base file that talks to
    Kafka given all three nodes."""
    cluster = compose("docker-compose.cluster.yml")["services"]
    nodes = {name: cluster[name]["environment"] for name in ("kafka", "kafka-2", "kafka-3")}
    assert {env["KAFKA_NODE_ID"] for env in nodes.values()} == {1, 2, 3}
    assert len({env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in nodes.values()}) == 1
    assert len({env["CLUSTER_ID"] for env in nodes.values()}) == 1
    assert {env["KAFKA_MIN_INSYNC_REPLICAS"] for env in nodes.values()} == {2}
    everything = "kafka:9092,kafka-2:9092,kafka-3:9092"
    clients = [
        name
        for name, service in compose()["services"].items()
        if "KAFKA_BOOTSTRAP_SERVERS" in (service.get("environment") or {})
    ]
    assert clients
    for name in clients:
        assert cluster[name]["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == everything, name
    assert cluster["setup"]["environment"]["KAFKA_REPLICATION_FACTOR"] == 3
    for node in ("kafka-2", "kafka-3"):  # the base file's broker: its listeners, users and ACLs
        assert cluster[node]["extends"] == {"file": "docker-compose.yml", "service": "kafka"}


@pytest.mark.parametrize("user", KAFKA_SERVICES)
def test_each_service_signs_in_to_kafka_as_its_own_user_which_setup_creates(user: str) -> None:
    services = compose()["services"]
    [name] = [n for n in OUR_SERVICES if n.split("-")[0] == user]
    environment = services[name]["environment"]
    secret = f"{user.upper()}_KAFKA_SECRET"
    assert environment["KAFKA_SASL_USERNAME"] == KafkaUser(user, "x").name
    assert environment["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert environment["KAFKA_SASL_PASSWORD"].startswith("${" + secret + ":-")
    assert services["setup"]["environment"][secret] == environment["KAFKA_SASL_PASSWORD"]


def test_only_the_operator_side_signs_in_as_the_kafka_super_user() -> None:
    operator = "${KAFKA_SASL_USERNAME:-mnistream}"
    holders = {
        name
        for name, service in compose()["services"].items()
        if (service.get("environment") or {}).get("KAFKA_SASL_USERNAME") == operator
    }
    assert holders == {"setup", "cli", "retrain"}


def test_the_compose_broker_is_secured_as_the_native_one() -> None:
    """Every listener, SASL and ACL setting of infra/kafka/server.properties, in the apache/kafka
    image's names (. is _, _ is __, - is ___), with the operator from .env."""
    template = (ROOT / "infra/kafka/server.properties").read_text()
    native = dict(re.findall(r"^([a-z][\w.-]*)=(.*)$", template, re.MULTILINE))
    secured = {
        key: value
        for key, value in native.items()
        if key.startswith(("listener.", "sasl.", "inter.broker", "super.users"))
        or key in ("authorizer.class.name", "allow.everyone.if.no.acl.found")
    }
    assert len(secured) >= 10
    broker = compose()["services"]["kafka"]["environment"]
    for key, value in secured.items():
        env = "KAFKA_" + key.replace("_", "__").replace("-", "___").replace(".", "_").upper()
        wanted = value.replace("@ADMIN_USER@", "${KAFKA_SASL_USERNAME:-mnistream}").replace(
            "@ADMIN_PASSWORD@", "${KAFKA_SASL_PASSWORD:-mnistream-secret}"
        )
        assert str(broker.get(env)) == wanted, key
