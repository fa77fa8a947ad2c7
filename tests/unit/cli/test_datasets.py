"""Dataset versions of the labeled drawings: named by their content, split by id, written once."""

from __future__ import annotations

import uuid
from typing import Any, cast

import pytest
from mnistream_cli.datasets import (
    MANIFEST,
    EmptyDatasetError,
    LabeledInput,
    content_hash,
    parquet,
    read_parquet,
    split_of,
    take_snapshot,
)
from mnistream_common.history_api import LabeledOut, ModelInputOut, ModelInputsOut
from mnistream_common.history_client import HistoryClient
from mnistream_common.storage import ObjectStore, S3Uri


def row(n: int, label: int | None = None) -> LabeledInput:
    return LabeledInput(
        uuid.UUID(int=n * 7919), n % 10 if label is None else label, bytes([n % 256]) * 784, 2
    )


class FakeHistory:
    """history-service's two reads a snapshot makes; one labeled drawing lost its image."""

    def __init__(self, rows: list[LabeledInput], lost: int = 0) -> None:
        self.rows = {r.digit_id: r for r in rows}
        self.lost = [uuid.UUID(int=10**9 + n) for n in range(lost)]

    async def labeled(self) -> list[LabeledOut]:
        found = [LabeledOut(digit_id=d, label=r.label) for d, r in self.rows.items()]
        return found + [LabeledOut(digit_id=d, label=1) for d in self.lost]

    async def model_inputs(self, digit_ids: list[uuid.UUID]) -> ModelInputsOut:
        inputs = [
            ModelInputOut(
                digit_id=d,
                model_input=self.rows[d].model_input,
                preprocessing_version=self.rows[d].preprocessing_version,
            )
            for d in digit_ids
            if d in self.rows
        ]
        return ModelInputsOut(
            inputs=inputs, missing=[d for d in digit_ids if d not in self.rows], unusable=[]
        )


class FakeStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts = 0

    async def put(self, uri: S3Uri, data: bytes, content_type: str) -> None:
        self.objects[str(uri)] = data
        self.puts += 1

    async def exists(self, uri: S3Uri) -> bool:
        return str(uri) in self.objects

    async def get(self, uri: S3Uri) -> bytes:
        return self.objects[str(uri)]


async def snapshot(history: FakeHistory, store: FakeStore) -> Any:
    return await take_snapshot(cast(HistoryClient, history), cast(ObjectStore, store), "datasets")


def test_a_fifth_is_held_out_by_id_alone() -> None:
    ids = [uuid.uuid4() for _ in range(10_000)]
    held = sum(split_of(d) == "heldout" for d in ids)
    assert 1_800 < held < 2_200
    assert [split_of(d) for d in ids] == [split_of(d) for d in ids]


def test_the_version_is_the_content_whatever_its_order() -> None:
    rows = [row(n) for n in range(50)]
    assert content_hash(rows) == content_hash(list(reversed(rows)))
    relabeled = [*rows[:-1], row(49, label=(rows[-1].label + 1) % 10)]
    assert content_hash(relabeled) != content_hash(rows)
    redrawn = [*rows[:-1], LabeledInput(rows[-1].digit_id, rows[-1].label, bytes(784), 2)]
    assert content_hash(redrawn) != content_hash(rows)
    reprocessed = [
        *rows[:-1],
        LabeledInput(rows[-1].digit_id, rows[-1].label, rows[-1].model_input, 3),
    ]
    assert content_hash(reprocessed) != content_hash(rows)


def test_a_split_reads_back_as_written() -> None:
    rows = [row(n) for n in range(30)]
    assert read_parquet(parquet(rows)) == sorted(rows, key=lambda r: r.digit_id.bytes)


async def test_the_same_labels_give_the_same_version_and_write_nothing() -> None:
    rows = [row(n) for n in range(200)]
    history, store = FakeHistory(rows, lost=1), FakeStore()
    first = await snapshot(history, store)
    assert first.written and store.puts == 3
    splits = first.manifest["splits"]
    assert splits["train"]["rows"] + splits["heldout"]["rows"] == 200
    assert sum(splits["train"]["classes"]) == splits["train"]["rows"]
    assert first.manifest["skipped"] == 1
    assert first.manifest["version"] == first.version == content_hash(rows)
    train = read_parquet(store.objects[f"s3://datasets/{first.version}/train.parquet"])
    assert {r.digit_id for r in train} == {
        r.digit_id for r in rows if split_of(r.digit_id) == "train"
    }

    again = await snapshot(FakeHistory(list(reversed(rows)), lost=1), store)
    assert (again.version, again.written, store.puts) == (first.version, False, 3)
    assert again.manifest == first.manifest

    more = await snapshot(FakeHistory([*rows, row(200)]), store)
    assert more.written and more.version != first.version
    assert f"s3://datasets/{first.version}/{MANIFEST}" in store.objects  # kept as it was


async def test_a_snapshot_cut_short_is_finished_by_the_next() -> None:
    rows = [row(n) for n in range(20)]
    store = FakeStore()
    version = content_hash(rows)
    store.objects[f"s3://datasets/{version}/train.parquet"] = b"half written"
    done = await snapshot(FakeHistory(rows), store)
    assert done.written and done.version == version
    assert read_parquet(store.objects[f"s3://datasets/{version}/train.parquet"])


async def test_no_labels_no_version() -> None:
    store = FakeStore()
    with pytest.raises(EmptyDatasetError, match="no labeled drawing with a model input"):
        await snapshot(FakeHistory([], lost=2), store)
    assert not store.objects


async def test_a_version_without_its_manifest_is_not_taken_as_complete() -> None:
    """The manifest is written last: a snapshot that fails on a split leaves none."""

    class FailingStore(FakeStore):
        async def put(self, uri: S3Uri, data: bytes, content_type: str) -> None:
            if self.puts == 1:
                raise OSError("MinIO went away")
            await super().put(uri, data, content_type)

    store = FailingStore()
    with pytest.raises(OSError, match="MinIO went away"):
        await snapshot(FakeHistory([row(n) for n in range(20)]), store)
    assert not any(key.endswith(MANIFEST) for key in store.objects)
