"""The benchmark's own stack (Kafka, Postgres, MinIO, MLflow) and its service processes.

The stack is started from a clean data folder by infra/stack.sh with the bench's ports; the
services are the console scripts users run, started as process groups, so stopping one stops
its children (uvicorn workers) too. Before a service stops, its peak memory is sampled.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mnistream_common.credentials import credentials_dir, stored_settings
from mnistream_system.processes import STACK, Service, ServiceError, stop_orphans

from bench import config
from bench.memory import PeakMemory, process_group_peak_mb

BIN = Path(sys.executable).parent


class BenchError(RuntimeError):
    """A benchmark step that cannot go on; the message says what to look at."""


def stack(command: str) -> None:
    """Run `infra/stack.sh COMMAND` against the bench stack; fail with its output."""
    result = subprocess.run(
        ["infra/stack.sh", command],
        cwd=config.ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(
            f"infra/stack.sh {command} failed ({result.returncode}):\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        )


def stop_leftovers() -> None:
    """Stop service processes an earlier, killed benchmark run left behind."""
    for leftover in stop_orphans(str(config.DATA.resolve())):
        print(f"stopped a leftover bench service: {leftover}")


def clean_stack_up() -> None:
    """Stop a bench stack left from an earlier run, wipe its data, start a fresh one."""
    stop_leftovers()
    stack("down")
    if config.DATA.exists():
        shutil.rmtree(config.DATA)
    started = time.monotonic()
    stack("up")
    print(f"bench stack up in {time.monotonic() - started:.0f} s ({config.DATA})", flush=True)


@dataclass
class Services:
    """The service processes the benchmark has started, by name."""

    memory: PeakMemory
    running: dict[str, Service] = field(default_factory=dict)

    def start(
        self,
        name: str,
        command: list[str],
        env: dict[str, str],
        ready_url: str,
        *,
        wait: bool = True,
    ) -> Service:
        """Start a service (stopping one of the same name first); wait for its probe."""
        self.stop(name)
        # Each service signs in to Kafka and MinIO as its own user, as `make run` starts it.
        own = stored_settings(credentials_dir(config.DATA), name.split("-")[0])
        env = {**config.stack_env(), STACK: str(config.DATA.resolve()), **own, **env}
        service = Service(name, command, env, ready_url, config.DATA / "logs" / "services")
        service.start()
        self.running[name] = service
        if wait:
            self.wait_ready(service)
        return service

    @staticmethod
    def wait_ready(service: Service, timeout: float = 90.0, *, url: str | None = None) -> None:
        """Wait for the probe (or `url`), turning a failure into a bench error."""
        try:
            service.wait_ready(timeout, url=url)
        except ServiceError as exc:
            raise BenchError(str(exc)) from None

    def gateway(self, workers: int = 1, *, profile: Path | None = None) -> Service:
        """The gateway with `workers` uvicorn processes and no rate limit."""
        command = _python_module("gateway", profile) if profile else [str(BIN / "gateway")]
        env = {"GATEWAY_WORKERS": str(workers)}
        return self.start("gateway", command, env, f"{gateway_url()}/healthz")

    def history(self) -> Service:
        """history-service (consumers and read API)."""
        url = f"http://127.0.0.1:{config.HISTORY_PORT}/readyz"
        return self.start("history", [str(BIN / "history-service"), "serve"], {}, url)

    def inference(self, index: int, *, wait: bool = True, profile: Path | None = None) -> Service:
        """Inference worker number `index`."""
        port = config.INFERENCE_PORT + index
        command = (
            _python_module("inference_worker", profile)
            if profile
            else [str(BIN / "inference-worker")]
        )
        env = {"INFERENCE_HTTP_PORT": str(port), "WORKER_ID": f"bench-inference-{index}"}
        return self.start(
            f"inference-{index}", command, env, f"http://127.0.0.1:{port}/healthz", wait=wait
        )

    def rescore(self, index: int) -> Service:
        """Rescore worker number `index`."""
        port = config.RESCORE_PORT + index
        env = {"RESCORE_HTTP_PORT": str(port), "WORKER_ID": f"bench-rescore-{index}"}
        return self.start(
            f"rescore-{index}",
            [str(BIN / "rescore-worker")],
            env,
            f"http://127.0.0.1:{port}/readyz",
        )

    def baseline(self, workers: int, onnx_path: Path) -> Service:
        """The teaching app's design (bench/baseline), for comparison only."""
        command = [
            str(BIN / "uvicorn"),
            "bench.baseline.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(config.BASELINE_PORT),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ]
        env = {"BASELINE_ONNX": str(onnx_path)}
        url = f"http://127.0.0.1:{config.BASELINE_PORT}/healthz"
        return self.start("baseline", command, env, url)

    def bare(self, workers: int) -> Service:
        """The bare ASGI reference (bench/bare.py) under the gateway's uvicorn."""
        command = [
            str(BIN / "uvicorn"),
            "bench.bare:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(config.BARE_PORT),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
            "--timeout-keep-alive",
            "30",
        ]
        return self.start("bare", command, {}, f"http://127.0.0.1:{config.BARE_PORT}/healthz")

    def stop(self, name: str, *, kind: str | None = None) -> None:
        """Sample its peak memory (as `kind`'s, by default its name's), then stop it
        (SIGTERM, SIGKILL if it lingers).

        A profiled service gets SIGINT instead: uvicorn re-raises the signal it stopped on,
        and only an interrupt (not SIGTERM) lets cProfile write its stats on the way out.
        """
        service = self.running.pop(name, None)
        if service is None:
            return
        process = service.process
        if process is not None and process.poll() is None:
            self.memory.observe(kind or _kind(name), process_group_peak_mb(process.pid))
        service.stop(signal.SIGINT if "cProfile" in service.command else signal.SIGTERM)

    def stop_matching(self, prefix: str) -> None:
        """Stop every service whose name starts with `prefix`."""
        for name in [n for n in self.running if n.startswith(prefix)]:
            self.stop(name)

    def stop_all(self) -> None:
        """Stop everything the benchmark started."""
        for name in list(self.running):
            self.stop(name)

    @contextmanager
    def session(self) -> Iterator[Services]:
        """Stop every started service on the way out, whatever happens."""
        try:
            yield self
        finally:
            self.stop_all()


def gateway_url() -> str:
    """The bench gateway's base URL."""
    return f"http://127.0.0.1:{config.GATEWAY_PORT}"


def history_url() -> str:
    """The bench history-service's base URL."""
    return f"http://127.0.0.1:{config.HISTORY_PORT}"


def _python_module(module: str, profile: Path) -> list[str]:
    # cProfile writes its stats when the module returns, which uvicorn does on SIGTERM.
    return [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", module]


def _kind(name: str) -> str:
    return name.split("-")[0] if name[-1].isdigit() else name
