"""One service process: started from a console script, awaited on its HTTP probe, stopped.

mirakuru does the process work (its own session per process, SIGTERM then SIGKILL to the whole
group, children tracked by an environment marker). This module adds what mnistream needs around
it: a log file per service, the log's tail in every error, and owner marks so that processes a
crashed runner left behind are found and stopped before a new system binds the same ports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
from mirakuru import SimpleExecutor
from mirakuru.exceptions import ProcessFinishedWithError

# Every service process carries the pid of the runner that started it and the data folder of
# its stack, so a later runner on the same stack can tell its own processes from orphans.
OWNER = "MNISTREAM_SYSTEM_OWNER"
STACK = "MNISTREAM_SYSTEM_STACK"


class ServiceError(RuntimeError):
    """A service did not start, or did not become ready; the message carries its log's tail."""


@dataclass
class Service:
    """One service process and where its output goes."""

    name: str
    command: list[str]
    env: dict[str, str]
    ready_url: str
    log_folder: Path
    cwd: Path | None = None
    _executor: SimpleExecutor | None = field(default=None, repr=False)
    _log: IO[Any] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        """The service's log file (appended to across restarts)."""
        return self.log_folder / f"{self.name}.log"

    @property
    def process(self) -> subprocess.Popen[Any] | None:
        """The running process, if started."""
        return self._executor.process if self._executor is not None else None

    @property
    def pid(self) -> int | None:
        """The process id (also its process group id), while it runs."""
        process = self.process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.pid is not None

    def start(self) -> None:
        """Start the process (readiness is awaited separately, so several boot at once)."""
        self.log_folder.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("a", buffering=1)
        self._log.write(f"--- start {time.strftime('%H:%M:%S')}\n")
        self._executor = SimpleExecutor(
            self.command,
            cwd=str(self.cwd) if self.cwd else None,
            envvars={**self.env, OWNER: str(os.getpid())},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            timeout=30,
        )
        self._executor.start()

    def wait_ready(
        self, timeout: float = 60.0, *, status: tuple[int, ...] = (200,), url: str | None = None
    ) -> None:
        """Poll the probe (or `url`) until it answers with one of `status`; fail with the log's
        tail, at once if the process exits."""
        url = url or self.ready_url
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            process = self.process
            if process is not None and process.poll() is not None:
                raise ServiceError(f"{self.name} exited ({process.returncode}):\n{self.tail()}")
            try:
                response = httpx.get(url, timeout=2.0)
                if response.status_code in status:
                    return
                last = f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise ServiceError(f"{self.name} not ready after {timeout:.0f}s ({last}):\n{self.tail()}")

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop it and its children (`signum`, then SIGKILL after 30 s) and wait until gone."""
        if self._executor is not None:
            with contextlib.suppress(ProcessFinishedWithError):  # stopped, with some exit code
                self._executor.stop(stop_signal=signum)
        self._close_log()

    def kill(self) -> None:
        """kill -9 the whole process group, as a crash would, and wait until it is gone."""
        if self._executor is not None:
            self._executor.kill(wait=True)
        self._close_log()

    def tail(self, lines: int = 30) -> str:
        """The end of its log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def answers(url: str) -> bool:
    """Whether anything answers HTTP at `url`."""
    try:
        httpx.get(url, timeout=1.0)
    except httpx.HTTPError:
        return False
    return True


def stop_orphans(stack: str) -> list[str]:
    """Kill service processes of `stack` whose runner is gone; returns what was stopped.

    A runner killed with -9 (a CI timeout, a closed terminal) cannot stop its services; left
    running, they would keep consuming in the same groups and answering on the same ports.
    """
    stopped: list[str] = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            env = process.environ()
            owner = env.get(OWNER)
            if env.get(STACK) != stack or owner is None or psutil.pid_exists(int(owner)):
                continue
            process.kill()
            stopped.append(f"{' '.join(process.info['cmdline'] or [])[:80]} (pid {process.pid})")
    return stopped
