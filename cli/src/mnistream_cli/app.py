"""The `mnistream` command: operator actions on a running mnistream."""

from __future__ import annotations

import typer

from mnistream_cli import operate, train
from mnistream_cli.settings import Settings

app = typer.Typer(
    name="mnistream",
    help="Operate mnistream: train, list and promote models, evaluate, replay, status.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Operate mnistream: train, list and promote models, evaluate, replay, status."""


@app.command()
def setup() -> None:
    """Create the Kafka topics (partitions, retention) and MinIO buckets; safe to re-run."""
    from mnistream_cli.setup import provision

    settings = Settings()
    changes, buckets = provision(settings)
    for change in changes:
        detail = f" ({change.detail})" if change.detail else ""
        typer.echo(f"topic  {change.topic:<18} {change.action}{detail}")
    for bucket in (settings.drawings_bucket, settings.artifacts_bucket):
        typer.echo(f"bucket {bucket:<18} {'created' if bucket in buckets else 'unchanged'}")


app.command()(train.train)
app.command()(operate.models)
app.command()(operate.promote)
app.command()(operate.rollback)
app.command()(operate.evaluate)
app.command()(operate.status)
app.command()(operate.bootstrap)
app.add_typer(operate.replay_app, name="replay")


def main() -> None:
    """Console-script entry point."""
    app()
