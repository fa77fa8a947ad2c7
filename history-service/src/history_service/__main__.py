"""`history-service serve | migrate`."""

from __future__ import annotations

import typer
import uvicorn

from history_service.settings import Settings

cli = typer.Typer(
    help="mnistream history-service: store and serve the history.", add_completion=False
)


@cli.command()
def serve() -> None:
    """Consume the digit topics into Postgres/MinIO and serve the read API."""
    settings = Settings()
    uvicorn.run(
        "history_service.app:create_app",
        factory=True,
        host=settings.history_host,
        port=settings.history_port,
        log_level="warning",
    )


@cli.command()
def migrate() -> None:
    """Apply the database migrations (also done at start unless MIGRATE_ON_START=false)."""
    from history_service.migrate import upgrade

    upgrade(Settings().database_url)
    typer.echo("history schema is at head")


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
