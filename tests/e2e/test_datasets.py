"""Dataset snapshots on the real stack: the labeled drawings become a version named by their
content in MinIO; a second snapshot with no new label is the same version and writes nothing;
one more label makes a new version beside it."""

from __future__ import annotations

import json

import pytest
from mnistream_cli.datasets import MANIFEST, read_parquet
from mnistream_common.storage import make_minio

from tests.e2e.support import history_caught_up, label_all, mnistream, upload_all
from tests.polling import eventually
from tests.stack import require_minio
from tests.system import ADMIN_TOKEN, System

pytestmark = pytest.mark.e2e

BUCKET = "datasets"


def version_of(output: str) -> str:
    """The version a snapshot names in its first line."""
    first = output.splitlines()[0].split()
    return first[first.index("dataset") + 1]


def stored(key: str) -> bytes:
    response = make_minio(require_minio()).get_object(BUCKET, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


async def test_a_snapshot_is_named_by_its_labels_and_written_once(
    system: System, drawings: list[bytes]
) -> None:
    ids = await upload_all(system.gateway_url, drawings[:12], concurrency=6)
    try:
        await label_all(system.gateway_url, ids[:11], [n % 10 for n in range(11)])
        await eventually(history_caught_up, 60, "the labels stored")
        first = mnistream("dataset", "snapshot").stdout
        version = version_of(first)
        manifest = json.loads(stored(f"{version}/{MANIFEST}"))
        assert manifest["version"] == version
        train = read_parquet(stored(f"{version}/train.parquet"))
        heldout = read_parquet(stored(f"{version}/heldout.parquet"))
        assert {r.digit_id for r in train + heldout} >= set(ids[:11])
        assert len(train) + len(heldout) == manifest["rows"]
        assert all(len(r.model_input) == 784 for r in train + heldout)

        again = mnistream("dataset", "snapshot").stdout
        assert again.startswith(f"unchanged: dataset {version} "), again

        await label_all(system.gateway_url, ids[11:], [7])
        await eventually(history_caught_up, 60, "the label stored")
        more = version_of(mnistream("dataset", "snapshot").stdout)
        assert more != version
        assert json.loads(stored(f"{more}/{MANIFEST}"))["rows"] == manifest["rows"] + 1
        assert json.loads(stored(f"{version}/{MANIFEST}")) == manifest  # the first one stays
        shown = mnistream("dataset", "show", version).stdout
        assert f"dataset {version} at s3://{BUCKET}/{version}/" in shown
    finally:  # their labels would weigh on the promotion gate of the tests after this one
        mnistream(
            "erase",
            *map(str, ids),
            "--yes",
            "--reason",
            "e2e: datasets",
            env={"ADMIN_TOKEN": ADMIN_TOKEN},
        )
