"""`inference-worker`: run one worker process (scale by running several)."""

from __future__ import annotations

import uvicorn

from inference_worker.app import create_app
from inference_worker.settings import Settings


def main() -> None:
    """Console-script entry point."""
    settings = Settings()
    uvicorn.run(
        create_app(settings),
        host=settings.inference_http_host,
        port=settings.inference_http_port,
        log_level="warning",
        lifespan="on",
    )


if __name__ == "__main__":
    main()
