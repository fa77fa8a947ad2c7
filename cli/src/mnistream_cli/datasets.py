"""Versioned datasets of the drawings people labeled (`mnistream dataset snapshot`).

    labeled drawings (history-service) ──▶ rows: digit id, label, 28×28 model input, its
    preprocessing version ──▶ split by id ──▶ content hash ──▶ s3://<datasets>/<hash>/
                                                  train.parquet, heldout.parquet, manifest.json

A version is named by the hash of what it holds, so the same labels give the same version, and
a snapshot with nothing new writes nothing. A version's objects are written once: the Parquet
files first, the manifest last, so a version with a manifest is complete, and a snapshot cut
short is finished by the next one (it writes the same bytes again).
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from mnistream_common.history_client import HistoryClient
from mnistream_common.storage import ObjectStore, S3Uri

from mnistream_cli.labels import INPUT_PAGE

Split = Literal["train", "heldout"]
SPLITS: tuple[Split, ...] = ("train", "heldout")
# One drawing in five is held out, chosen by its id alone: a drawing never changes sides as
# labels accumulate, so a held-out accuracy compares across versions.
HELDOUT_PERCENT = 20
FORMAT = 1
MANIFEST = "manifest.json"
PARQUET_TYPE = "application/vnd.apache.parquet"


@dataclass(frozen=True)
class LabeledInput:
    """One labeled drawing as a dataset holds it."""

    digit_id: uuid.UUID
    label: int
    model_input: bytes  # 784 bytes: the 28×28 input in [0, 255], ink bright on black
    preprocessing_version: int


def split_of(digit_id: uuid.UUID) -> Split:
    """Which side a drawing is on, from its id alone."""
    bucket = int.from_bytes(hashlib.blake2b(digit_id.bytes, digest_size=8).digest(), "big")
    return "heldout" if bucket % 100 < HELDOUT_PERCENT else "train"


def content_hash(rows: Iterable[LabeledInput]) -> str:
    """The version's name: sha256 over every row in id order, so neither the order the labels
    came in nor the Parquet library's bytes change it."""
    digest = hashlib.sha256(f"mnistream-dataset-{FORMAT}".encode())
    for row in sorted(rows, key=lambda r: r.digit_id.bytes):
        digest.update(row.digit_id.bytes)
        digest.update(bytes([row.label]))
        digest.update(row.preprocessing_version.to_bytes(4, "big"))
        digest.update(row.model_input)
    return digest.hexdigest()


def parquet(rows: Sequence[LabeledInput]) -> bytes:
    """One split as a Parquet file, rows in id order."""
    import pyarrow as pa  # here: the promotion gate imports this module for `split_of` alone
    import pyarrow.parquet as pq

    ordered = sorted(rows, key=lambda r: r.digit_id.bytes)
    table = pa.table(
        {
            "digit_id": pa.array([str(r.digit_id) for r in ordered], pa.string()),
            "label": pa.array([r.label for r in ordered], pa.int8()),
            "preprocessing_version": pa.array(
                [r.preprocessing_version for r in ordered], pa.int16()
            ),
            "model_input": pa.array([r.model_input for r in ordered], pa.binary(784)),
        }
    )
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def read_parquet(data: bytes) -> list[LabeledInput]:
    """The rows of one split's Parquet file."""
    import pyarrow.parquet as pq

    return [
        LabeledInput(
            uuid.UUID(row["digit_id"]),
            row["label"],
            row["model_input"],
            row["preprocessing_version"],
        )
        for row in pq.read_table(io.BytesIO(data)).to_pylist()
    ]


def manifest(rows: Sequence[LabeledInput], version: str, skipped: int) -> dict[str, Any]:
    """What a version holds, for people and for the trainer."""
    sides = {side: [r for r in rows if split_of(r.digit_id) == side] for side in SPLITS}
    return {
        "format": FORMAT,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(),
        "rows": len(rows),
        "splits": {
            side: {
                "file": f"{side}.parquet",
                "rows": len(found),
                "classes": [Counter(r.label for r in found)[digit] for digit in range(10)],
            }
            for side, found in sides.items()
        },
        "split_rule": f"blake2b-64 of the id's 16 bytes, mod 100 < {HELDOUT_PERCENT}: heldout",
        "preprocessing_versions": sorted({r.preprocessing_version for r in rows}),
        "skipped": skipped,  # labeled drawings with no model input (their image is gone)
    }


def manifest_bytes(document: dict[str, Any]) -> bytes:
    """The manifest as it is stored."""
    return (json.dumps(document, indent=2) + "\n").encode()


@dataclass(frozen=True)
class Snapshot:
    """What a snapshot found: the version, its manifest, and whether this snapshot wrote it."""

    version: str
    manifest: dict[str, Any]
    written: bool

    def uri(self, bucket: str) -> str:
        """Where the version's objects are."""
        return f"s3://{bucket}/{self.version}/"


async def take_snapshot(history: HistoryClient, store: ObjectStore, bucket: str) -> Snapshot:
    """Every labeled drawing with its model input as a dataset version in `bucket` (written
    only when no complete version of the same content is there)."""
    rows, skipped = await labeled_inputs(history)
    if not rows:
        raise EmptyDatasetError(
            f"no labeled drawing with a model input ({skipped} labeled without one): label "
            "drawings in the page first"
        )
    return await write_version(store, bucket, rows, skipped)


class EmptyDatasetError(ValueError):
    """Nothing to snapshot."""


async def write_version(
    store: ObjectStore, bucket: str, rows: Sequence[LabeledInput], skipped: int = 0
) -> Snapshot:
    """`rows` as a dataset version, unless a complete one of the same content is there."""
    version = content_hash(rows)
    found = S3Uri(bucket, f"{version}/{MANIFEST}")
    if await store.exists(found):
        return Snapshot(version, json.loads(await store.get(found)), written=False)
    document = manifest(rows, version, skipped)
    for side in SPLITS:
        chosen = [r for r in rows if split_of(r.digit_id) == side]
        await store.put(S3Uri(bucket, f"{version}/{side}.parquet"), parquet(chosen), PARQUET_TYPE)
    await store.put(found, manifest_bytes(document), "application/json")
    return Snapshot(version, document, written=True)


async def labeled_inputs(history: HistoryClient) -> tuple[list[LabeledInput], int]:
    """Every labeled drawing with its model input (history-service makes missing inputs from
    the originals), and how many have none (their image is gone)."""
    labels = {item.digit_id: item.label for item in await history.labeled()}
    ids = sorted(labels, key=lambda d: d.bytes)
    rows: list[LabeledInput] = []
    for start in range(0, len(ids), INPUT_PAGE):
        found = await history.model_inputs(ids[start : start + INPUT_PAGE])
        rows += [
            LabeledInput(i.digit_id, labels[i.digit_id], i.model_input, i.preprocessing_version)
            for i in found.inputs
        ]
    return rows, len(ids) - len(rows)


async def read_snapshot(store: ObjectStore, bucket: str, version: str) -> Snapshot:
    """A complete version's manifest; FileNotFoundError when there is none."""
    found = S3Uri(bucket, f"{version}/{MANIFEST}")
    if not await store.exists(found):
        raise FileNotFoundError(f"no dataset version {version} in s3://{bucket}/")
    return Snapshot(version, json.loads(await store.get(found)), written=False)


async def read_version(
    store: ObjectStore, bucket: str, version: str
) -> tuple[Snapshot, dict[Split, list[LabeledInput]]]:
    """A complete version's manifest and the rows of each split."""
    found = await read_snapshot(store, bucket, version)
    splits = {
        side: read_parquet(await store.get(S3Uri(bucket, f"{version}/{side}.parquet")))
        for side in SPLITS
    }
    return found, splits
