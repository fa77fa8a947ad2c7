"""The process runner: a service starts, answers, stops with its children; one that exits is
reported with its log at once; and processes a killed runner left behind are found and stopped."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from mnistream_system.processes import OWNER, STACK, Service, ServiceError, stop_orphans


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def http_server(tmp_path: Path, port: int, stack: str = "") -> Service:
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    return Service("web", command, {STACK: stack}, f"http://127.0.0.1:{port}/", tmp_path)


def test_a_service_starts_answers_and_stops(tmp_path: Path) -> None:
    service = http_server(tmp_path, free_port())

    service.start()
    service.wait_ready(10)
    pid = service.pid
    service.stop()

    assert (pid is not None and not psutil.pid_exists(pid)) or psutil.Process(
        pid
    ).status() == "zombie"
    assert not service.running
    assert "--- start" in service.log_path.read_text()


def test_a_service_that_exits_fails_at_once_with_its_log(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "print('cannot bind: address in use'); raise SystemExit(3)"]
    service = Service("broken", command, {}, f"http://127.0.0.1:{free_port()}/", tmp_path)
    service.start()
    started = time.monotonic()

    with pytest.raises(ServiceError, match=r"broken exited \(3\)[\s\S]*address in use"):
        service.wait_ready(30)

    assert time.monotonic() - started < 10, "an exited process is not waited on"


def test_kill_stops_the_whole_process_group(tmp_path: Path) -> None:
    script = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    )
    service = Service("parent", [sys.executable, "-c", script], {}, "http://127.0.0.1:1/", tmp_path)
    service.start()
    assert service.pid is not None
    parent = psutil.Process(service.pid)
    deadline = time.monotonic() + 10
    while not parent.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    [child] = parent.children()

    service.kill()

    child.wait(5)
    assert not child.is_running()


def test_services_of_a_runner_that_died_are_stopped_by_the_next(tmp_path: Path) -> None:
    port, stack = free_port(), f"stack-{time.time_ns()}"
    # A runner that starts a service and dies without stopping it, as kill -9 would leave it.
    runner = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from mnistream_system.processes import STACK, Service
        command = [sys.executable, "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
        url, logs = "http://127.0.0.1:{port}/", Path(r"{tmp_path}")
        service = Service("web", command, {{STACK: "{stack}"}}, url, logs)
        service.start()
        service.wait_ready(10)
        print(service.pid, flush=True)
        os._exit(0)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", runner], capture_output=True, text=True, timeout=30
    )
    orphan = psutil.Process(int(done.stdout.split()[-1]))
    assert orphan.is_running() and orphan.environ()[OWNER] != "", done.stderr

    assert stop_orphans("another-stack") == []
    stopped = stop_orphans(stack)

    orphan.wait(5)
    assert len(stopped) == 1 and f"pid {orphan.pid}" in stopped[0]


def test_a_running_runners_services_are_not_orphans(tmp_path: Path) -> None:
    stack = f"stack-{time.time_ns()}"
    service = http_server(tmp_path, free_port(), stack)
    service.start()
    try:
        service.wait_ready(10)
        assert stop_orphans(stack) == []
        assert service.running
    finally:
        service.stop()
