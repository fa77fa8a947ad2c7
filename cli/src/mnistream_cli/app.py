"""The `mnistream` command: operator actions on a running mnistream."""

from __future__ import annotations

import typer

from mnistream_cli import dataset, drift, operate, retrain, rollout, traces, train
from mnistream_cli.settings import Settings

app = typer.Typer(
    name="mnistream",
    help="Operate mnistream: train, list and promote models, canary and shadow releases, "
    "evaluate, drift, traces, datasets, retrain, replay, erase, status.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Operate mnistream: train, list and promote models, evaluate, replay, erase, status."""


@app.command()
def setup(
    topics: bool = typer.Option(
        True,
        "--topics/--no-topics",
        help="Create and align the topics (--no-topics where Strimzi KafkaTopics own them).",
    ),
    users: bool = typer.Option(
        True,
        "--users/--no-users",
        help="Also give each service its MinIO user (MinIO's admin API; with another S3, make "
        "the users in its own IAM and pass --no-users).",
    ),
    kafka_users: bool = typer.Option(
        True,
        "--kafka-users/--no-kafka-users",
        help="Also give each service its Kafka user and ACLs (--no-kafka-users where Strimzi "
        "KafkaUsers own them; nothing is done when KAFKA_SECURITY_PROTOCOL is PLAINTEXT).",
    ),
) -> None:
    """Create the Kafka topics (partitions, retention), the MinIO buckets and each service's
    MinIO and Kafka users (their secrets in MNISTREAM_DATA/credentials/); safe to re-run."""
    from mnistream_cli.setup import provision

    settings = Settings()
    done = provision(settings, topics=topics, users=users, kafka_users=kafka_users)
    for change in done.topics:
        detail = f" ({change.detail})" if change.detail else ""
        typer.echo(f"topic  {change.topic:<18} {change.action}{detail}")
    for bucket in (settings.drawings_bucket, settings.artifacts_bucket, settings.datasets_bucket):
        typer.echo(
            f"bucket {bucket:<18} {'created' if bucket in done.buckets_created else 'unchanged'}"
        )
    for user, action in done.s3_users.items():
        typer.echo(f"user   {user:<19} {action}")
    for user, action in done.kafka_users.items():
        typer.echo(f"kafka  {user:<19} {action}")


app.command()(train.train)
app.command()(operate.models)
app.command()(operate.promote)
app.command()(operate.rollback)
app.command()(operate.evaluate)
app.command()(operate.status)
app.command()(operate.bootstrap)
app.command()(operate.erase)
app.command()(drift.drift)
app.command()(traces.trace)
app.command()(retrain.retrain)
app.command()(rollout.canary)
app.command()(rollout.shadow)
app.command()(rollout.abort)
app.add_typer(rollout.rollout_app, name="rollout")
app.add_typer(operate.replay_app, name="replay")
app.add_typer(dataset.dataset_app, name="dataset")


def main() -> None:
    """Console-script entry point: an unreachable service is an error message, not a traceback."""
    import logging
    import sys

    import httpx
    from aiokafka.errors import KafkaError

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the message below says it all
    try:
        app()
    except KafkaError as exc:
        servers = Settings().kafka_bootstrap_servers
        operate.console.print(
            f"[bold red]error:[/] Kafka at {servers}: {exc}. Is the stack up (`make infra-up`)?"
        )
        sys.exit(1)
    except httpx.HTTPError as exc:
        where = exc.request.url if _has_request(exc) else "a service"
        operate.console.print(f"[bold red]error:[/] cannot reach {where}: {exc!r}")
        sys.exit(1)


def _has_request(exc: Exception) -> bool:
    try:
        return getattr(exc, "request", None) is not None
    except RuntimeError:  # httpx raises when an error carries no request
        return False
