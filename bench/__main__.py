"""`python -m bench all|inference|rescore|report`: run the benchmark or rebuild its report."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from pathlib import Path

from bench.config import FULL, SMALL
from bench.run import SELECTIONS, run
from bench.stack import BenchError


def main() -> int:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SELECTIONS:
        command = sub.add_parser(name, help=f"run the '{name}' measurements from a clean stack")
        command.add_argument("--small", action="store_true", help="tiny sizes, for debugging")
        command.add_argument("--keep-stack", action="store_true", help="leave the stack up")
        command.add_argument("--label", default="", help="a note stored with the results")
        command.add_argument("--repeats", type=int, help="runs per measurement (default 3)")
        command.add_argument(
            "--report", action="store_true", help="write docs/benchmarks.md from the results"
        )
    gpu = sub.add_parser("gpu", help="the CUDA path against this machine's CPU (make gpu-check)")
    gpu.add_argument("--small", action="store_true", help="tiny sizes, for debugging")
    gpu.add_argument(
        "--cpu-fallback", action="store_true", help="without a GPU, let the CPU stand in for it"
    )
    gpu.add_argument("--mnist", type=Path, help="MNIST root (default: the trainer's MNIST_ROOT)")
    gpu.add_argument("--out", type=Path, help="where the JSON goes (default: bench-results/)")
    report = sub.add_parser("report", help="write docs/benchmarks.md and plots from a results file")
    report.add_argument("results", type=Path, nargs="?", help="default: the newest 'all' run")
    args = parser.parse_args()
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so every started process is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if args.command == "gpu":
            return _gpu(args)
        if args.command == "report":
            from bench.report import write_report

            print(write_report(args.results))
            return 0
        sizes = SMALL if args.small else FULL
        if args.repeats:
            repeats = max(1, args.repeats)
            sizes = dataclasses.replace(
                sizes, repeats=repeats, slow_repeats=min(repeats, sizes.slow_repeats)
            )
        path = run(args.command, sizes, keep_stack=args.keep_stack, label=args.label)
        print(f"results: {path}")
        from bench.report import summary_table, write_report

        if args.command in ("scale", "tracing"):  # into the report of the newest full run
            if args.report:
                print(write_report())
            return 0
        print(summary_table(path))
        if args.report:
            print(write_report(path))
        return 0
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1


def _gpu(args: argparse.Namespace) -> int:
    from bench.gpu import GpuUnavailableError, main

    try:
        path = main(
            small=args.small, cpu_fallback=args.cpu_fallback, mnist=args.mnist, out=args.out
        )
    except GpuUnavailableError as exc:
        print(f"gpu check: {exc}", file=sys.stderr)
        return 2
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
