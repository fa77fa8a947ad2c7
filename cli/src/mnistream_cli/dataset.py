"""`mnistream dataset snapshot|show`: the labeled drawings as versioned datasets."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

import typer
from mnistream_common.history_client import HistoryClient, HistoryUnavailableError
from rich.table import Table

from mnistream_cli.operate import console, fail
from mnistream_cli.settings import Settings

if TYPE_CHECKING:  # MinIO's client and pyarrow: every other command does without them
    from mnistream_cli.datasets import Snapshot

dataset_app = typer.Typer(
    help="Versioned datasets of the drawings people labeled.", no_args_is_help=True
)


@dataset_app.command("snapshot")
def snapshot() -> None:
    """Write every labeled drawing (model input, label, id) as a dataset version named by its
    content hash, split by id into train and held out; nothing new, nothing written."""
    take(Settings())


def take(settings: Settings) -> Snapshot:
    """Take a snapshot and print it (its first line is plain: scripts read the version from
    it); a clear error when there is nothing to take or nowhere to put it."""
    from minio.error import S3Error

    from mnistream_cli.datasets import EmptyDatasetError

    try:
        taken = asyncio.run(_snapshot(settings))
    except (HistoryUnavailableError, EmptyDatasetError) as exc:
        raise fail(str(exc)) from exc
    except S3Error as exc:
        raise fail(f"{exc}; `mnistream setup` makes the {settings.datasets_bucket} bucket") from exc
    verb = "wrote" if taken.written else "unchanged:"
    typer.echo(f"{verb} dataset {taken.version} at {taken.uri(settings.datasets_bucket)}")
    show_manifest(taken)
    return taken


async def _snapshot(settings: Settings) -> Snapshot:
    from mnistream_common.storage import ObjectStore, make_minio

    from mnistream_cli.datasets import take_snapshot

    store = ObjectStore(make_minio(settings))
    async with HistoryClient.at(settings.history_url, timeout=120) as history:
        return await take_snapshot(history, store, settings.datasets_bucket)


@dataset_app.command("show")
def show(version: Annotated[str, typer.Argument(help="A dataset version (its hash).")]) -> None:
    """Print a dataset version's manifest: rows, classes per split, preprocessing."""
    from mnistream_common.storage import ObjectStore, make_minio

    from mnistream_cli.datasets import read_snapshot

    settings = Settings()
    store = ObjectStore(make_minio(settings))
    try:
        found = asyncio.run(read_snapshot(store, settings.datasets_bucket, version))
    except FileNotFoundError as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"dataset {found.version} at {found.uri(settings.datasets_bucket)}")
    show_manifest(found)


def show_manifest(found: Snapshot) -> None:
    """The splits and their classes as a table, then what else the manifest says."""
    document: dict[str, Any] = found.manifest
    table = Table(title=f"created {document['created_at']}")
    table.add_column("split")
    table.add_column("rows", justify="right")
    for digit in range(10):
        table.add_column(str(digit), justify="right")
    for side, split in document["splits"].items():
        table.add_row(side, str(split["rows"]), *map(str, split["classes"]))
    console.print(table)
    console.print(
        f"preprocessing versions {document['preprocessing_versions']}; "
        f"split: {document['split_rule']}; "
        f"{document['skipped']} labeled drawing(s) without a model input left out"
    )
