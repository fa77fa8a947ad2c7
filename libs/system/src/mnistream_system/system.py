"""The running mnistream services: gateway, history-service, N inference and M rescore workers.

Described once, as the console scripts users run with the settings each needs, on ports that
`Ports` derives. `make run` (through `mnistream-system run`), the end-to-end and chaos tests and
the benchmark all start their services from here.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

from mnistream_system.processes import STACK, Service, ServiceError, answers, stop_orphans

# A development package: it runs from the repository (an editable workspace member), whose root
# is four folders up, and starts the console scripts installed beside its own interpreter.
ROOT = Path(__file__).resolve().parents[4]
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Ports:
    """Where each service listens (workers take consecutive ports from their base)."""

    gateway: int = 8000
    history: int = 8001
    inference: int = 8300
    rescore: int = 8400

    @classmethod
    def from_base(cls, base: int) -> Ports:
        """gateway at `base`, history at +1, inference workers from +100, rescore from +200."""
        return cls(base, base + 1, base + 100, base + 200)


# The program each process name runs, as Prometheus labels it (`service`).
SERVICE_OF = {
    "gateway": "gateway",
    "history": "history-service",
    "inference": "inference-worker",
    "rescore": "rescore-worker",
}


def data_folder() -> Path:
    """The stack's data folder (`MNISTREAM_DATA`, `.data` by default)."""
    return Path(os.environ.get("MNISTREAM_DATA", ROOT / ".data"))


@dataclass
class System:
    """Every service of one mnistream, started and stopped together or one by one."""

    inference_workers: int = 2
    rescore_workers: int = 1
    ports: Ports = field(default_factory=Ports)
    env: dict[str, str] = field(default_factory=dict)
    worker_prefix: str = ""
    services: dict[str, Service] = field(default_factory=dict)

    @property
    def gateway_url(self) -> str:
        """The public API."""
        return f"http://127.0.0.1:{self.ports.gateway}"

    @property
    def history_url(self) -> str:
        """history-service's API."""
        return f"http://127.0.0.1:{self.ports.history}"

    @property
    def log_folder(self) -> Path:
        """Where every service's log goes."""
        return data_folder() / "logs" / "services"

    def shared_env(self) -> dict[str, str]:
        """Settings every service of this system shares."""
        return {
            "HISTORY_URL": self.history_url,
            "GATEWAY_PORT": str(self.ports.gateway),
            "HISTORY_PORT": str(self.ports.history),
            STACK: str(data_folder().resolve()),
            **self.env,
        }

    def build(self) -> None:
        """Describe every service process (nothing starts yet)."""
        self.add(
            "history",
            ["history-service", "serve"],
            self.own_settings("history"),
            f"{self.history_url}/readyz",
        )
        self.add(
            "gateway", ["gateway"], self.own_settings("gateway"), f"{self.gateway_url}/healthz"
        )
        for index in range(self.inference_workers):
            self._add_inference(index)
        for index in range(self.rescore_workers):
            port = self.ports.rescore + index
            self.add(
                f"rescore-{index}",
                ["rescore-worker"],
                {
                    "RESCORE_HTTP_PORT": str(port),
                    "WORKER_ID": self._worker_id("rescore", index),
                    **self.own_settings("rescore"),
                },
                f"http://127.0.0.1:{port}/healthz",
            )

    def own_settings(self, service: str) -> dict[str, str]:
        """The secrets `mnistream setup` made for `service` alone (its MinIO and Kafka users), from
        `credentials/<service>.env` in the data folder; nothing where the stack has none (set
        up before there were users): then the service uses the stack's own."""
        path = data_folder() / "credentials" / f"{service}.env"
        found = dotenv_values(path) if path.exists() else {}
        return {k: v for k, v in found.items() if v is not None}

    def add(self, name: str, command: list[str], env: dict[str, str], ready_url: str) -> Service:
        """Describe one more service: a console script of the workspace and its settings."""
        executable = command[0] if "/" in command[0] else str(BIN / command[0])
        service = Service(
            name,
            [executable, *command[1:]],
            {**self.shared_env(), **env},
            ready_url,
            self.log_folder,
            cwd=ROOT,
        )
        self.services[name] = service
        return service

    def _add_inference(self, index: int) -> Service:
        port = self.ports.inference + index
        return self.add(
            f"inference-{index}",
            ["inference-worker"],
            {
                "INFERENCE_HTTP_PORT": str(port),
                "WORKER_ID": self._worker_id("inference", index),
                **self.own_settings("inference"),
            },
            f"http://127.0.0.1:{port}/healthz",
        )

    def _worker_id(self, kind: str, index: int) -> str:
        return f"{self.worker_prefix}{kind}-{index}"

    def start(self) -> None:
        """Start every service at once and wait until each answers its probe."""
        if not self.services:
            self.build()
        for leftover in stop_orphans(str(data_folder().resolve())):
            print(f"stopped a service an earlier run left behind: {leftover}", file=sys.stderr)
        taken = [s.ready_url for s in self.services.values() if answers(s.ready_url)]
        if taken:
            raise ServiceError(
                f"something already answers at {', '.join(taken)}: a service started by someone "
                "else? Stop it first, or the new services cannot bind their ports."
            )
        for service in self.services.values():
            service.start()
        with ThreadPoolExecutor(max_workers=len(self.services)) as pool:
            for waited in [pool.submit(s.wait_ready) for s in self.services.values()]:
                waited.result()
        self.publish_targets()

    @property
    def targets_file(self) -> Path:
        """Where Prometheus finds this system's services (infra/prometheus/prometheus.yml)."""
        return data_folder() / "prometheus" / "targets" / f"system-{self.ports.gateway}.json"

    def publish_targets(self) -> None:
        """Write every service's /metrics address for Prometheus' file discovery (atomically:
        Prometheus may read the file at any moment)."""
        groups = [
            {
                "targets": [f"127.0.0.1:{self.port_of(name)}"],
                "labels": {"service": SERVICE_OF[name.split("-")[0]], "process": name},
            }
            for name in self.services
        ]
        self.targets_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.targets_file.with_suffix(".json.tmp")
        partial.write_text(json.dumps(groups, indent=1))
        partial.replace(self.targets_file)

    def port_of(self, name: str) -> int:
        """The port where the service `name` answers (its API and /metrics)."""
        env = self.services[name].env
        if name.startswith("inference-"):
            return int(env["INFERENCE_HTTP_PORT"])
        if name.startswith("rescore-"):
            return int(env["RESCORE_HTTP_PORT"])
        return self.ports.gateway if name == "gateway" else self.ports.history

    def restart(self, name: str) -> None:
        """Start a stopped or killed service again and wait for it."""
        service = self.services[name]
        service.start()
        service.wait_ready()

    def add_inference_worker(self) -> str:
        """Start one more inference worker (it joins the group); returns its name."""
        index = sum(name.startswith("inference-") for name in self.services)
        service = self._add_inference(index)
        service.start()
        service.wait_ready()
        self.publish_targets()
        return service.name

    def inference_ready(self, timeout: float = 60.0) -> None:
        """Wait until every running inference worker serves a model (/readyz 200)."""
        for service in self.running("inference-"):
            port = service.env["INFERENCE_HTTP_PORT"]
            service.wait_ready(timeout, url=f"http://127.0.0.1:{port}/readyz")

    def running(self, prefix: str = "") -> list[Service]:
        """The services now running whose name starts with `prefix`."""
        return [s for n, s in self.services.items() if n.startswith(prefix) and s.running]

    def stop(self) -> None:
        """Stop every service, gateway first (no new uploads), history last (it stores)."""
        order = sorted(self.services, key=lambda n: (n != "gateway", n == "history"))
        for name in order:
            self.services[name].stop()
        self.targets_file.unlink(missing_ok=True)
