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
    objects: bool = typer.Option(
        False,
        "--objects",
        help="Also delete every drawing image from object storage (a replay puts them back "
        "from digits.submitted).",
    ),
) -> None:
    """Drop the history tables and recreate them empty (then `mnistream replay history`)."""
    if not yes:
        typer.echo("this drops every history table; run again with --yes to confirm", err=True)
        raise typer.Exit(1)
    from history_service.migrate import reset_schema

    settings = Settings()
    reset_schema(settings.database_url)
    typer.echo("history tables dropped and recreated empty; replay the topics to refill them")
    if objects:
        from mnistream_common.storage import delete_all, make_minio

        deleted = delete_all(make_minio(settings), settings.drawings_bucket)
        typer.echo(f"{deleted} drawing objects deleted from bucket {settings.drawings_bucket}")


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
