"""`gateway`: serve the public API and the web client."""

from __future__ import annotations

import uvicorn

from gateway.settings import Settings


def main() -> None:
    """Console-script entry point."""
    settings = Settings()
    uvicorn.run(
        "gateway.app:create_app",
        factory=True,
        host=settings.gateway_host,
        port=settings.gateway_port,
        workers=settings.gateway_workers,
        log_level="warning",
        timeout_keep_alive=30,
    )


if __name__ == "__main__":
    main()
