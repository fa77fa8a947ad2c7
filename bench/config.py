"""Where the benchmark's own stack lives and how big each measurement is."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data" / "bench"
RESULTS = ROOT / "bench-results"
DOCS = ROOT / "docs"

# Ports apart from `make run` (8000…), the test stack (1xxxx) and other local stacks, and
# below Linux's ephemeral range (32768+), where a client's outgoing port can take them.
KAFKA_PORT = 26092
POSTGRES_PORT = 26432
MINIO_PORT = 26900
MLFLOW_PORT = 26500
GATEWAY_PORT = 26000
HISTORY_PORT = 26001
INFERENCE_PORT = 26100
RESCORE_PORT = 26200
BASELINE_PORT = 26300
BARE_PORT = 26301
# history-service's admin API, for the replay phase; a bench stack listens on localhost only.
ADMIN_TOKEN = "bench-admin-token-for-the-replay-phase"


def stack_env() -> dict[str, str]:
    """The variables the stack script, the services and the CLI read, for the bench stack."""
    return {
        "MNISTREAM_DATA": str(DATA),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{KAFKA_PORT}",
        "KAFKA_CONTROLLER_PORT": str(KAFKA_PORT + 1),
        "DATABASE_URL": (
            f"postgresql+asyncpg://mnistream:mnistream@127.0.0.1:{POSTGRES_PORT}/mnistream"
        ),
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{MINIO_PORT}",
        "MINIO_CONSOLE_PORT": str(MINIO_PORT + 1),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{MLFLOW_PORT}",
        "HISTORY_URL": f"http://127.0.0.1:{HISTORY_PORT}",
        "GATEWAY_URL": f"http://127.0.0.1:{GATEWAY_PORT}",
        "GATEWAY_PORT": str(GATEWAY_PORT),
        "HISTORY_PORT": str(HISTORY_PORT),
        "RATE_LIMIT_PER_MINUTE": "0",
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "LOG_JSON": "true",
        # The default system, whatever .env says: no Prometheus or Jaeger beside the bench
        # stack, and no spans (bench/tracing.py measures their cost on its own).
        "OBSERVABILITY": "0",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
    }


def results_files(selection: str) -> list[Path]:
    """Results of a selection, oldest first: in bench-results/ and committed in docs/benchmarks/."""
    pattern = f"*-{selection}.json"
    found = [*RESULTS.glob(pattern), *(DOCS / "benchmarks").glob(pattern)]
    return sorted(found, key=lambda p: p.name)


def apply_stack_env() -> None:
    """Point this process (and every process it starts) at the bench stack."""
    os.environ.update(stack_env())


@dataclass(frozen=True)
class Sizes:
    """How much each measurement does. `FULL` is sized for `make bench` in about 15 min on 2
    quiet cores: the long open-loop and rescore phases run fewer times than the short ones."""

    repeats: int = 3
    slow_repeats: int = 2  # latency, hot swap and rescore
    cnn_train_images: int = 10_000
    cnn_epochs: int = 1
    raw_seconds: float = 2.0
    inputs: int = 500
    worker_drawings: int = 3_000
    ingest_seconds: int = 8
    ingest_connections: int = 64
    rates: tuple[int, ...] = (50, 200, 1_000)
    # Gateway processes (GATEWAY_WORKERS) of the whole system: one per core. One process is
    # bound by its GIL near 200 uploads/s on this machine (p99 about 4 s at 200/s; 0.5 s with 2).
    system_gateways: int = 2
    cpu_rates: tuple[int, ...] = (50, 200, 400)
    rate_seconds: float = 6.0
    swap_rate: int = 200
    swap_seconds: float = 24.0
    rollout_rate: int = 100  # the shadow rollout: both CNNs read every drawing
    rollout_seconds: float = 12.0
    rescore_drawings: int = 10_000
    profile_seconds: int = 10
    scale_drawings: tuple[int, ...] = (1_000_000, 10_000_000)

    def as_dict(self) -> dict[str, Any]:
        """For the results file."""
        return asdict(self)


FULL = Sizes()
SMALL = Sizes(
    repeats=1,
    slow_repeats=1,
    cnn_train_images=3_000,
    cnn_epochs=1,
    raw_seconds=0.5,
    inputs=100,
    worker_drawings=400,
    ingest_seconds=3,
    rate_seconds=3.0,
    swap_seconds=8.0,
    rollout_seconds=4.0,
    rescore_drawings=600,
    profile_seconds=3,
    scale_drawings=(20_000, 100_000),
)
