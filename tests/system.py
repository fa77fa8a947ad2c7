"""The running mnistream services for end-to-end tests: real processes on the real stack.

`System` starts gateway, history-service, N inference workers and M rescore workers as
subprocesses (the console scripts users run), waits until they answer, and can kill -9 and
restart any of them. Logs go to $MNISTREAM_DATA/logs/services/<name>.log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# The admin token of every system the tests start (and of the `mnistream` runs that replay).
ADMIN_TOKEN = "test-admin-token-0123456789"


@dataclass
class Service:
    """One service process."""

    name: str
    command: list[str]
    env: dict[str, str]
    ready_url: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """Where its output goes."""
        data = Path(os.environ.get("MNISTREAM_DATA", ROOT / ".data"))
        folder = data / "logs" / "services"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{self.name}.log"

    def start(self) -> None:
        """Start it (its readiness is awaited separately)."""
        with self.log_path.open("ab") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')}\n".encode())
            self.process = subprocess.Popen(
                self.command,
                env={**os.environ, **self.env, "LOG_JSON": "true"},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def wait_ready(self, timeout: float = 60.0, *, status: tuple[int, ...] = (200,)) -> None:
        """Poll its probe until it answers with one of `status`; fail with its log tail."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited ({self.process.returncode}):\n{self.tail()}"
                )
            try:
                response = httpx.get(self.ready_url, timeout=2.0)
                if response.status_code in status:
                    return
                last = f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.3)
        raise AssertionError(f"{self.name} not ready after {timeout:.0f}s ({last}):\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        """The end of its log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class System:
    """All the services, on ports apart from the defaults so tests run beside `make run`."""

    inference_workers: int = 2
    rescore_workers: int = 1
    base_port: int = 18000
    services: dict[str, Service] = field(default_factory=dict)

    @property
    def gateway_url(self) -> str:
        """The public API."""
        return f"http://127.0.0.1:{self.base_port}"

    @property
    def history_url(self) -> str:
        """history-service's API."""
        return f"http://127.0.0.1:{self.base_port + 1}"

    def env(self) -> dict[str, str]:
        """Settings every service of this system shares."""
        return {
            "HISTORY_URL": self.history_url,
            "GATEWAY_PORT": str(self.base_port),
            "HISTORY_PORT": str(self.base_port + 1),
            "RATE_LIMIT_PER_MINUTE": "0",
            "RESCORE_CHUNK_SIZE": "100",
            "ADMIN_TOKEN": ADMIN_TOKEN,
        }

    def build(self) -> None:
        """Describe every service process (nothing starts yet)."""
        self._add("history", ["history-service", "serve"], {}, f"{self.history_url}/readyz")
        self._add("gateway", ["gateway"], {}, f"{self.gateway_url}/healthz")
        for i in range(self.inference_workers):
            self._add_inference(i)
        for i in range(self.rescore_workers):
            port = self.base_port + 200 + i
            self._add(
                f"rescore-{i}",
                ["rescore-worker"],
                {"RESCORE_HTTP_PORT": str(port), "WORKER_ID": f"test-rescore-{i}"},
                f"http://127.0.0.1:{port}/healthz",
            )

    def _add_inference(self, index: int) -> Service:
        port = self.base_port + 100 + index
        self._add(
            f"inference-{index}",
            ["inference-worker"],
            {"INFERENCE_HTTP_PORT": str(port), "WORKER_ID": f"test-inference-{index}"},
            f"http://127.0.0.1:{port}/healthz",
        )
        return self.services[f"inference-{index}"]

    def add_inference_worker(self) -> str:
        """Start one more inference worker (it joins the group); returns its name."""
        index = sum(name.startswith("inference-") for name in self.services)
        service = self._add_inference(index)
        service.start()
        service.wait_ready()
        return service.name

    def _add(self, name: str, command: list[str], env: dict[str, str], ready: str) -> None:
        executable = str(BIN / command[0])
        self.services[name] = Service(
            name, [executable, *command[1:]], {**self.env(), **env}, ready
        )

    def start(self) -> None:
        """Start every service and wait until each answers."""
        if not self.services:
            self.build()
        taken = [s.ready_url for s in self.services.values() if _answers(s.ready_url)]
        if taken:
            raise AssertionError(
                f"something already answers at {', '.join(taken)}: a leftover service from an "
                "earlier run? Stop it first, or the new services cannot bind their ports."
            )
        for service in self.services.values():
            service.start()
        for service in self.services.values():
            service.wait_ready()

    def restart(self, name: str) -> None:
        """Start a stopped or killed service again and wait for it."""
        service = self.services[name]
        service.start()
        service.wait_ready()

    def stop(self) -> None:
        """Stop every service."""
        for service in self.services.values():
            service.stop()

    def inference_ready(self, timeout: float = 60.0) -> None:
        """Wait until every running inference worker serves a model (/readyz 200)."""
        for name, service in self.services.items():
            if name.startswith("inference-") and service.process and service.process.poll() is None:
                port = service.env["INFERENCE_HTTP_PORT"]
                Service(
                    name, [], {}, f"http://127.0.0.1:{port}/readyz", service.process
                ).wait_ready(timeout)


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1.0)
    except httpx.HTTPError:
        return False
    return True
