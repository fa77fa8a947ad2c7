"""The Helm chart (deploy/helm/mnistream) and the example manifests (deploy/examples), checked
offline: `helm lint`, `helm template` for the default, GPU and production values, every rendered
document validated by kubectl-validate against Kubernetes' own schemas and KEDA's CRDs, and the
policies the chart promises (non-root, limits, probes, budgets, scaling within the partitions,
each service signing in to Kafka as its own user, whose example KafkaUser has kafka_users.py's
ACLs).

The tools are pinned and installed by `make k8s-tools` (from the Go module proxy); without them
these tests fail, naming the target.
"""

from __future__ import annotations

import os
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka.admin import AclBinding, AclOperation, ResourceType
from gateway.settings import Settings as GatewaySettings
from history_service.settings import Settings as HistorySettings
from inference_worker.settings import Settings as InferenceSettings
from mnistream_cli.kafka_users import GRANTS, MECHANISM, KafkaUser, acls
from mnistream_cli.settings import Settings as CliSettings
from mnistream_common.topics import ALL_TOPICS, topic_for
from pydantic_settings import BaseSettings
from rescore_worker.settings import Settings as RescoreSettings
from trainer.settings import Settings as TrainerSettings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "mnistream"
EXAMPLES = ROOT / "deploy" / "examples"
TOOLS = Path(os.environ.get("MNISTREAM_TOOLS", Path.home() / ".cache" / "mnistream" / "bin"))
VALUES = {"default": [], "gpu": ["values-gpu.yaml"], "production": ["values-production.yaml"]}
KUBERNETES = "1.30"  # the newest schemas kubectl-validate v0.0.4 carries built in
SETTINGS: dict[str, type[BaseSettings]] = {
    "gateway": GatewaySettings,
    "history-service": HistorySettings,
    "inference-worker": InferenceSettings,
    "rescore-worker": RescoreSettings,
    "setup": CliSettings,
    "migrate": HistorySettings,
    "retrain": CliSettings,  # and the trainer's (TrainerSettings): it trains in-process
}
# Variables only there to build another one (Kubernetes expands $(DB_USER) in DATABASE_URL).
HELPER_VARIABLES = {"DB_USER", "DB_PASSWORD"}
# Kinds of the examples whose CRDs no package registry here serves (Strimzi's are built into
# its Java operator; CloudNativePG's Go module is not served): checked for shape only.
UNVALIDATED_KINDS = {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "Cluster"}
# The service (a key of GRANTS) each Deployment's container runs as.
SERVICE_OF = {
    "gateway": "gateway",
    "history-service": "history",
    "inference-worker": "inference",
    "rescore-worker": "rescore",
}
OPERATOR = "mnistream-operator"  # the super user (the setup Job, the CLI)


def newest(pattern: str, what: str) -> Path:
    """The newest version `make k8s-tools` installed (by version, not by name), or a failure
    saying to run it."""

    def version(path: Path) -> tuple[int, ...]:
        number = path.name.rsplit("-v", 1)[1]
        return tuple(int(part) for part in number.split(".") if part.isdigit())

    found = sorted(TOOLS.glob(pattern), key=version)
    if not found:
        pytest.fail(f"{what} is not installed in {TOOLS}: run `make k8s-tools`")
    return found[-1]


def tool(name: str) -> Path:
    """A pinned tool `make k8s-tools` installed."""
    return newest(f"{name}-v*", name)


def keda_crds() -> Path:
    return newest("crds-keda-v*", "KEDA's CRDs")


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=120, check=False
    )


@cache
def rendered_text(variant: str, *overrides: str) -> str:
    files = [arg for f in VALUES[variant] for arg in ("-f", str(CHART / f))]
    sets = [arg for o in overrides for arg in ("--set", o)]
    done = run(tool("helm"), "template", "mnistream", CHART, *files, *sets)
    assert done.returncode == 0, done.stderr
    return done.stdout


def documents(variant: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rendered_text(variant)) if d]


def validate(text: str, tmp_path: Path, name: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return run(tool("kubectl-validate"), path, "--version", KUBERNETES, "--local-crds", keda_crds())


def workloads(variant: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(document, pod spec) of every Deployment, Job and CronJob."""
    return [
        (d, pod_spec(d))
        for d in documents(variant)
        if d["kind"] in ("Deployment", "Job", "CronJob")
    ]


def pod_spec(document: dict[str, Any]) -> dict[str, Any]:
    spec = document["spec"]
    job = spec["jobTemplate"]["spec"] if document["kind"] == "CronJob" else spec
    pod: dict[str, Any] = job["template"]["spec"]
    return pod


@pytest.mark.parametrize("variant", VALUES)
def test_the_chart_lints(variant: str) -> None:
    files = [arg for f in VALUES[variant] for arg in ("-f", str(CHART / f))]
    done = run(tool("helm"), "lint", CHART, *files)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("variant", VALUES)
def test_every_rendered_document_is_valid_for_kubernetes_and_keda(
    variant: str, tmp_path: Path
) -> None:
    done = validate(rendered_text(variant), tmp_path, variant)
    assert done.returncode == 0, done.stdout + done.stderr
    kinds = {d["kind"] for d in documents(variant)}
    assert {"Deployment", "Service", "PodDisruptionBudget", "Job", "ScaledObject"} <= kinds


@pytest.mark.parametrize(
    "broken",
    [
        "gateway.replicas=two",  # Kubernetes' own schema: replicas is an integer
        "inferenceWorker.autoscaling.minReplicas=one",  # KEDA's CRD: an integer too
    ],
)
def test_a_broken_value_fails_the_validation(broken: str, tmp_path: Path) -> None:
    done = validate(rendered_text("default", broken), tmp_path, "broken")
    assert done.returncode != 0, f"{broken} was not caught:\n{done.stdout}"


@pytest.mark.parametrize("variant", VALUES)
def test_every_pod_runs_as_non_root_with_limits_and_no_privilege(variant: str) -> None:
    for document, pod in workloads(variant):
        name = document["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            limits = container["resources"]["limits"]
            assert {"cpu", "memory"} <= set(limits), name


@pytest.mark.parametrize("variant", VALUES)
def test_every_service_is_probed_on_its_own_health_routes_and_has_a_budget(variant: str) -> None:
    docs = documents(variant)
    budgets = {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    for document, pod in workloads(variant):
        if document["kind"] != "Deployment":
            continue
        [container] = pod["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert document["metadata"]["name"] in budgets


@pytest.mark.parametrize("variant", VALUES)
def test_each_variable_is_a_settings_field_of_its_program(variant: str) -> None:
    for _, pod in workloads(variant):
        for container in pod["containers"]:
            fields = {f.upper() for f in SETTINGS[container["name"]].model_fields}
            if container["name"] == "setup":
                fields |= {"HISTORY_S3_SECRET", "INFERENCE_S3_SECRET", "RESCORE_S3_SECRET"}
            if container["name"] == "retrain":
                fields |= {f.upper() for f in TrainerSettings.model_fields}
            names = {v["name"] for v in container["env"]} - HELPER_VARIABLES
            assert names <= fields, (container["name"], sorted(names - fields))


def test_topics_can_be_left_to_strimzi_with_the_buckets_still_made() -> None:
    jobs = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]
        for d in yaml.safe_load_all(rendered_text("default", "setup.topics=false"))
        if d and d["kind"] == "Job"
    }
    setup = jobs["mnistream-setup"]
    assert setup["command"] == [
        "mnistream",
        "setup",
        "--no-topics",
        "--no-users",
        "--no-kafka-users",
    ]
    replication = {v["name"]: v.get("value") for v in setup["env"]}["KAFKA_REPLICATION_FACTOR"]
    assert replication == "3"


@pytest.mark.parametrize("variant", VALUES)
def test_scaling_stays_within_the_partitions_of_the_topic_it_follows(variant: str) -> None:
    scaled = [d for d in documents(variant) if d["kind"] == "ScaledObject"]
    assert {d["spec"]["scaleTargetRef"]["name"] for d in scaled} == {
        "mnistream-inference-worker",
        "mnistream-rescore-worker",
    }
    for document in scaled:
        [trigger] = document["spec"]["triggers"]
        partitions = topic_for(trigger["metadata"]["topic"]).partitions
        assert 1 <= document["spec"]["minReplicaCount"] <= document["spec"]["maxReplicaCount"]
        assert document["spec"]["maxReplicaCount"] <= partitions


def test_the_gpu_values_put_the_inference_workers_on_gpus() -> None:
    [worker] = [
        pod
        for document, pod in workloads("gpu")
        if document["metadata"]["name"] == "mnistream-inference-worker"
    ]
    [container] = worker["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith("/inference-worker-gpu:0.1.0")
    assert worker["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in container["env"]}


def signs_in_as(env: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The user a container signs in to Kafka as, and where its password comes from."""
    assert env["KAFKA_SECURITY_PROTOCOL"]["value"] in ("SASL_PLAINTEXT", "SASL_SSL")
    assert env["KAFKA_SASL_MECHANISM"]["value"] == MECHANISM
    return env["KAFKA_SASL_USERNAME"]["value"], env["KAFKA_SASL_PASSWORD"]["valueFrom"]


@pytest.mark.parametrize("variant", VALUES)
def test_each_service_signs_in_to_kafka_as_its_own_user(variant: str) -> None:
    seen = set()
    for document, pod in workloads(variant):
        if document["kind"] != "Deployment":
            continue
        [container] = pod["containers"]
        service = SERVICE_OF[container["name"]]
        user, password = signs_in_as(env_of(container))
        # Its own user, so the broker allows it only its own grants; never the super user.
        assert user == KafkaUser(service, "").name != OPERATOR, container["name"]
        assert password == {"secretKeyRef": {"name": user, "key": "password"}}
        seen.add(service)
    assert seen == set(GRANTS)


def setup_job(*overrides: str) -> dict[str, Any]:
    container: dict[str, Any]
    [container] = [
        d["spec"]["template"]["spec"]["containers"][0]
        for d in yaml.safe_load_all(rendered_text("default", *overrides))
        if d and d["metadata"]["name"] == "mnistream-setup"
    ]
    return container


def test_setup_signs_in_as_the_operator_and_leaves_kafka_users_to_strimzi() -> None:
    setup = setup_job()
    env = env_of(setup)
    assert signs_in_as(env) == (
        OPERATOR,
        {"secretKeyRef": {"name": OPERATOR, "key": "password"}},
    )
    assert "--no-kafka-users" in setup["command"]
    assert not [name for name in env if name.endswith("_KAFKA_SECRET")]


def test_setup_can_make_the_kafka_users_with_the_passwords_of_their_secrets() -> None:
    setup = setup_job("setup.kafkaUsers=true")
    assert "--no-kafka-users" not in setup["command"]
    env = env_of(setup)
    fields = {f.upper() for f in CliSettings.model_fields}
    for service in GRANTS:
        name = f"{service.upper()}_KAFKA_SECRET"
        assert name in fields
        user = KafkaUser(service, "").name
        assert env[name]["valueFrom"] == {"secretKeyRef": {"name": user, "key": "password"}}


@pytest.mark.parametrize("variant", VALUES)
def test_keda_reads_the_lag_as_the_workers_own_user(variant: str) -> None:
    docs = documents(variant)
    auths = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "TriggerAuthentication"}
    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    assert scaled
    for document in scaled:
        worker = document["spec"]["scaleTargetRef"]["name"].removeprefix("mnistream-")
        grants = GRANTS[SERVICE_OF[worker]]
        [trigger] = document["spec"]["triggers"]
        meta = trigger["metadata"]
        assert (meta["sasl"], meta["tls"]) == ("scram_sha512", "disable")
        # The user may describe the group and the topic (Read implies Describe).
        assert meta["consumerGroup"] in grants.groups
        assert meta["topic"] in {t.name for t in grants.read}
        auth = auths[trigger["authenticationRef"]["name"]]
        assert auth["env"] == [
            {"parameter": "username", "name": "KAFKA_SASL_USERNAME", "containerName": worker}
        ]
        user = KafkaUser(SERVICE_OF[worker], "").name
        assert auth["secretTargetRef"] == [
            {"parameter": "password", "name": user, "key": "password"}
        ]


@cache
def examples() -> list[dict[str, Any]]:
    return [
        d
        for path in sorted(EXAMPLES.glob("*.yaml"))
        for d in yaml.safe_load_all(path.read_text())
        if d
    ]


def test_the_examples_native_documents_are_valid(tmp_path: Path) -> None:
    native = [d for d in examples() if d["kind"] not in UNVALIDATED_KINDS]
    assert {d["kind"] for d in native} == {"Deployment", "Service", "Secret"}
    done = validate(yaml.safe_dump_all(native), tmp_path, "examples")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {d["kind"] for d in examples()} - {d["kind"] for d in native} == UNVALIDATED_KINDS


def test_the_example_topics_are_those_of_topics_py_replicated() -> None:
    topics = {d["spec"]["topicName"]: d["spec"] for d in examples() if d["kind"] == "KafkaTopic"}
    assert set(topics) == {t.name for t in ALL_TOPICS}
    for spec in ALL_TOPICS:
        found = topics[spec.name]
        assert found["partitions"] == spec.partitions
        assert (found["replicas"], found["config"]["min.insync.replicas"]) == (3, "2")
        assert {k: v for k, v in found["config"].items() if k != "min.insync.replicas"} == (
            spec.config()
        )


def acl_rules(user: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(resource type, name, operation) of each ACL a KafkaUser allows, in Kafka's words."""
    rules = set()
    for rule in user["spec"]["authorization"]["acls"]:
        resource = rule["resource"]
        # acls() gives only allowing rules on literal names, from any host.
        assert (rule.get("type", "allow"), resource["patternType"], rule["host"]) == (
            "allow",
            "literal",
            "*",
        )
        for operation in rule["operations"]:
            rules.add((resource["type"].upper(), resource["name"], operation.upper()))
    return rules


def kafka_words(binding: AclBinding) -> tuple[str, str, str]:
    """(resource type, name, operation) of an ACL binding of kafka_users.py."""
    assert isinstance(binding.restype, ResourceType)
    assert isinstance(binding.operation, AclOperation)
    return binding.restype.name, binding.name, binding.operation.name


def test_the_example_kafka_users_are_those_of_kafka_users_py() -> None:
    users = {d["metadata"]["name"]: d for d in examples() if d["kind"] == "KafkaUser"}
    names = {service: KafkaUser(service, "").name for service in GRANTS}
    assert set(users) == {OPERATOR, *names.values()}
    for user in users.values():
        assert user["metadata"]["labels"] == {"strimzi.io/cluster": "mnistream"}
        assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
    for service, name in names.items():
        wanted = {kafka_words(binding) for binding in acls(name, GRANTS[service])}
        assert acl_rules(users[name]) == wanted, name
    # The operator needs no ACLs: it is the cluster's super user.
    assert "authorization" not in users[OPERATOR]["spec"]
    [kafka] = [d["spec"]["kafka"] for d in examples() if d["kind"] == "Kafka"]
    assert kafka["authorization"] == {"type": "simple", "superUsers": [OPERATOR]}
    assert {listener["authentication"]["type"] for listener in kafka["listeners"]} == {
        "scram-sha-512"
    }


def test_the_chart_reads_the_secrets_of_the_example_kafka_users() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["kafka"]
    names = {service: KafkaUser(service, "").name for service in GRANTS}
    assert values["users"] == {"setup": OPERATOR, **names}
    assert (values["securityProtocol"], values["saslMechanism"]) == ("SASL_PLAINTEXT", MECHANISM)


def test_setup_making_the_kafka_users_refuses_other_user_names() -> None:
    """`mnistream setup` names each user mnistream-<service>: with other names in kafka.users
    the pods would sign in as users that never exist."""
    files = [arg for f in VALUES["default"] for arg in ("-f", str(CHART / f))]
    sets = ["--set", "setup.kafkaUsers=true", "--set", "kafka.users.gateway=gw"]
    done = run(tool("helm"), "template", "mnistream", CHART, *files, *sets)
    assert done.returncode != 0
    assert "kafka.users.gateway must be that name" in done.stderr


def test_production_retrains_on_a_schedule_one_run_at_a_time_as_the_operator() -> None:
    [cron] = [d for d in documents("production") if d["kind"] == "CronJob"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"  # a second would start beside a canary
    [container] = pod_spec(cron)["containers"]
    assert container["image"].endswith("/mnistream-trainer:0.1.0")
    assert container["command"] == ["mnistream", "retrain"]
    assert "--if-new-labels" in container["args"]  # a run with nothing new does nothing
    env = {v["name"]: v for v in container["env"]}
    assert env["KAFKA_SASL_USERNAME"]["value"] == OPERATOR
    assert env["HISTORY_URL"]["value"] == "http://mnistream-history-service:8001"
    assert not [d for d in documents("default") if d["kind"] == "CronJob"]  # off by default


def test_tracing_sends_every_service_s_spans_where_it_is_told_and_only_then() -> None:
    endpoint, link = "http://jaeger-collector:4318", "https://jaeger.example.org/trace/{trace_id}"
    traced = yaml.safe_load_all(
        rendered_text("default", f"tracing.otlpEndpoint={endpoint}", f"tracing.traceUrl={link}")
    )
    services = {"gateway", "history-service", "inference-worker", "rescore-worker"}
    seen = set()
    for document in traced:
        if not document or document["kind"] not in ("Deployment", "StatefulSet"):
            continue
        name = document["metadata"]["name"].removeprefix("mnistream-")
        container = pod_spec(document)["containers"][0]
        env = {v["name"]: v.get("value") for v in container["env"]}
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == endpoint, name
        assert env.get("TRACE_URL") == (link if name == "gateway" else None), name
        seen.add(name)
    assert services <= seen
    untraced = [
        v["name"]
        for _, pod in workloads("default")
        for container in pod["containers"]
        for v in container.get("env", [])
    ]
    assert "LOG_JSON" in untraced  # the list is of every variable
    assert not set(untraced) & {"OTEL_EXPORTER_OTLP_ENDPOINT", "TRACE_URL"}
