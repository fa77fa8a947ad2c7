"""`rescore-worker`: run one rescore worker process (scale by running several)."""

from __future__ import annotations

import uvicorn

from rescore_worker.app import create_app
from rescore_worker.settings import Settings


def main() -> None:
    """Console-script entry point."""
    settings = Settings()
    uvicorn.run(
        create_app(settings),
        host=settings.rescore_http_host,
        port=settings.rescore_http_port,
        log_level="warning",
        lifespan="on",
    )


if __name__ == "__main__":
    main()
