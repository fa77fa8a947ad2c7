"""`mnistream-system run`: every service of `make run` in the foreground, their logs interleaved.

    mnistream-system run [--inference-workers N] [--rescore-workers M]

Ctrl-C or SIGTERM (`make stop`) stops every service and returns once all have exited. If a
service exits on its own, the others are stopped too, so nothing half-runs unnoticed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from dotenv import dotenv_values

from mnistream_system.processes import Service, ServiceError
from mnistream_system.system import ROOT, Ports, System, data_folder

COLOURS = ("36", "33", "35", "32", "34", "31")


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    args = _parser().parse_args(argv)
    ports = Ports(
        gateway=setting("GATEWAY_PORT", 8000),
        history=setting("HISTORY_PORT", 8001),
        # The first worker's port; the others take the next ones.
        inference=setting("INFERENCE_HTTP_PORT", 8300),
        rescore=setting("RESCORE_HTTP_PORT", 8400),
    )
    system = System(args.inference_workers, args.rescore_workers, ports)
    _say(
        f"{args.inference_workers} inference worker(s) (metrics on ports {ports.inference}..), "
        f"{args.rescore_workers} rescore worker(s) ({ports.rescore}..)"
    )
    sys.exit(run(system, data_folder() / "run" / "system.pid"))


def setting(name: str, default: int) -> int:
    """A number from the environment, else from `.env` (as the services read them), else
    `default`: the ports the runner probes must be the ones the services bind."""
    value = os.environ.get(name) or dotenv_values(ROOT / ".env").get(name)
    return int(value) if value else default


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnistream-system", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run every service until Ctrl-C")
    run_parser.add_argument(
        "--inference-workers", type=int, default=setting("INFERENCE_WORKERS", 2)
    )
    run_parser.add_argument("--rescore-workers", type=int, default=setting("RESCORE_WORKERS", 1))
    return parser


def run(system: System, pid_file: Path) -> int:
    """Start `system`, show its logs until told to stop or a service exits; 0 on a clean stop."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _setter(stop))
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(str(os.getpid()))
    system.build()
    follower = threading.Thread(target=_follow, args=(system, stop), daemon=True)
    follower.start()
    try:
        system.start()
        _say(f"every service is up: open {system.gateway_url}  (Ctrl-C or `make stop` stops)")
        while not stop.wait(1.0):
            if exited := [s for s in system.services.values() if not s.running]:
                _say(f"{exited[0].name} exited; stopping the others")
                return 1
        return 0
    except ServiceError as exc:
        _say(str(exc))
        return 1
    finally:
        system.stop()
        stop.set()
        follower.join(timeout=2)
        pid_file.unlink(missing_ok=True)
        _say("services stopped")


def _setter(stop: threading.Event) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    return handler


def _follow(system: System, stop: threading.Event) -> None:
    """Print every new line of every service's log, prefixed by the service (like honcho)."""
    system.log_folder.mkdir(parents=True, exist_ok=True)
    offsets = {name: _size(s) for name, s in system.services.items()}
    width = max(map(len, system.services))
    while not stop.wait(0.2):
        for index, (name, service) in enumerate(system.services.items()):
            offsets[name] = _print_new(service, offsets.get(name, 0), name.ljust(width), index)


def _size(service: Service) -> int:
    try:
        return service.log_path.stat().st_size
    except OSError:
        return 0


def _print_new(service: Service, offset: int, label: str, index: int) -> int:
    try:
        with service.log_path.open("rb") as log:
            log.seek(offset)
            chunk = log.read()
    except OSError:
        return offset
    complete = chunk[: chunk.rfind(b"\n") + 1]
    colour = COLOURS[index % len(COLOURS)]
    for line in complete.decode(errors="replace").splitlines():
        print(f"\033[{colour}m{label} |\033[0m {line}", flush=True)
    return offset + len(complete)


def _say(message: str) -> None:
    print(f"\033[1mmnistream-system |\033[0m {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
