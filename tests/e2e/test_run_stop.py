"""`make run`, `make stop`, then at once `make infra-up`, as the README has a user do.

This once failed: PostgreSQL got a fast shutdown right after it started ("pg_ctl: could not
start server"), because the `make run` being stopped was still tearing the stack down when
`make infra-up` began. `make stop` now returns only once `make run` has finished. The cycle
runs here on a stack of its own (its own data folder, first model and ports, none of the test
stack's), exactly through the Makefile's targets.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.polling import eventually_sync

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
# Below 32768 (out of the ephemeral range) and apart from the test (19xxx/15xxx), chaos (23xxx)
# and bench (26xxx) stacks.
PORTS = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:24092",
    "KAFKA_CONTROLLER_PORT": "24093",
    "DATABASE_URL": "postgresql+asyncpg://mnistream:mnistream@127.0.0.1:24432/mnistream",
    "S3_ENDPOINT_URL": "http://127.0.0.1:24900",
    "MINIO_CONSOLE_PORT": "24901",
    "MLFLOW_TRACKING_URI": "http://127.0.0.1:24500",
    "GATEWAY_PORT": "24800",
    "HISTORY_PORT": "24801",
    "INFERENCE_HTTP_PORT": "24830",
    "RESCORE_HTTP_PORT": "24840",
    "OBSERVABILITY": "1",  # Prometheus and Jaeger too: `make stop` must stop them as well
    "PROMETHEUS_PORT": "24090",
    "JAEGER_PORT": "24686",
    "JAEGER_GRPC_PORT": "24685",
    "JAEGER_OTLP_PORT": "24318",
}
LISTENING = (
    *(24092, 24432, 24900, 24500, 24800, 24801, 24830, 24840),
    *(24090, 24686, 24685, 24318),
)


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def group_alive(group: int) -> list[str]:
    """The processes still in a process group (zombies aside), as pid and command."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group and fields[0] != "Z":
                found.append(f"{stat.parent.name} {(stat.parent / 'cmdline').read_text()}")
        except (OSError, IndexError, ValueError):
            continue
    return found


def serving(gateway: str) -> bool:
    try:
        body = httpx.get(f"{gateway}/readyz", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return False
    return bool(body.get("model"))


def make(target: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", target], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


TRAINING = "no model has been promoted yet: training the first model"


def test_make_stop_returns_once_everything_has_stopped_so_infra_up_starts_at_once() -> None:
    """Twice on a fresh stack: `make stop` while `make run` is still starting (training the first
    model: run.sh acts on the stop only once that command ends, which is how the stack used to
    be torn down under the next start), then, run again, while it serves. Each time `make
    stop` returns only when nothing of the run is left, and `make infra-up` then works."""
    # Under the checkout like the other stacks' (PostgreSQL runs as its own user, which cannot
    # enter pytest's private temporary folders), emptied first.
    data = ROOT / ".data" / "cycle"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    env = {
        **os.environ,
        **PORTS,
        "MNISTREAM_DATA": str(data),
        "INFERENCE_WORKERS": "1",
        "RESCORE_WORKERS": "1",
    }
    assert not [p for p in LISTENING if listening(p)], "a port of this test is taken already"
    try:
        for stop_when in ("starting", "serving"):
            cycle(env, data / f"make-run-{stop_when}.log", stop_when)
    finally:
        make("infra-down", env, timeout=300)


def cycle(env: dict[str, str], log_path: Path, stop_when: str) -> None:
    """make run, until `stop_when`; make stop; nothing left; make infra-up; make infra-down."""
    gateway = f"http://127.0.0.1:{PORTS['GATEWAY_PORT']}"
    with log_path.open("w") as log:
        run = subprocess.Popen(
            ["make", "run"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def reached() -> bool:
            assert run.poll() is None, log_path.read_text()[-3000:]
            if stop_when == "starting":
                return TRAINING in log_path.read_text()
            return serving(gateway)

        eventually_sync(reached, 600, f"make run {stop_when}", interval=0.5)
        started = time.monotonic()
        stopped = make("stop", env, timeout=300)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        # When `make stop` returns, make run has finished: no process of its group is left
        # (make, infra/run.sh, the CLI, mnistream-system, the services), nothing listens.
        left = group_alive(run.pid)
        assert not left, f"make stop returned while make run's processes remain: {left}"
        still = [p for p in LISTENING if listening(p)]
        assert not still, f"still listening after make stop: {still}"
        print(f"make stop while {stop_when} took {time.monotonic() - started:.1f} s")

        up = make("infra-up", env, timeout=300)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        time.sleep(5)  # a teardown still under way would stop what infra-up started by now
        status = subprocess.run(
            ["infra/stack.sh", "status"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert status.returncode == 0, status.stdout + status.stderr
    finally:
        if run.poll() is None:
            os.killpg(run.pid, 15)
            run.wait(timeout=120)
        make("infra-down", env, timeout=300)
