"""`gateway`: serve the public API and the web client (GATEWAY_WORKERS processes)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import uvicorn

from gateway.settings import Settings


def main() -> None:
    """Console-script entry point."""
    settings = Settings()
    run_dir = settings.gateway_run_dir or Path(tempfile.mkdtemp(prefix="mnistream-gateway-"))
    # The worker processes read these when they start: one rate-limit file for all of them,
    # and prometheus_client's multiprocess mode, so /metrics adds up every process.
    os.environ["GATEWAY_RUN_DIR"] = str(run_dir)
    if settings.gateway_workers > 1:
        metrics = run_dir / "metrics"
        shutil.rmtree(metrics, ignore_errors=True)
        metrics.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    try:
        uvicorn.run(
            "gateway.app:create_app",
            factory=True,
            host=settings.gateway_host,
            port=settings.gateway_port,
            workers=settings.gateway_workers,
            log_level="warning",
            timeout_keep_alive=30,
        )
    finally:
        if settings.gateway_run_dir is None:
            shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
