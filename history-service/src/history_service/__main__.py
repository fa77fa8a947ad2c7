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


@cli.command()
def reset(
    yes: bool = typer.Option(False, "--yes", help="Confirm: every history table is dropped."),
) -> None:
    """Drop the history tables and recreate them empty (then `mnistream replay history`)."""
    if not yes:
        typer.echo("this drops every history table; run again with --yes to confirm", err=True)
        raise typer.Exit(1)
    from history_service.migrate import reset_schema

    reset_schema(Settings().database_url)
    typer.echo("history tables dropped and recreated empty; replay the topics to refill them")


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
