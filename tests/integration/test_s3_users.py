"""Each service's MinIO user, as `mnistream setup` made it on the test stack: allowed what the
service does with objects, refused the rest (a leaked worker secret cannot replace a model or
touch the drawings). Fails when MinIO is down or the stack was set up without users."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from minio import Minio
from minio.error import S3Error
from mnistream_common.credentials import credentials_dir
from mnistream_common.s3_users import SERVICES
from mnistream_common.settings import S3Settings
from mnistream_common.storage import make_minio
from pydantic import SecretStr

from tests.system import ROOT

pytestmark = pytest.mark.integration

# (service, bucket) -> what the service may do there: read, write (put and delete), list.
ALLOWED: dict[tuple[str, str], set[str]] = {
    ("history", "drawings"): {"read", "write", "list"},
    ("history", "artifacts"): set(),
    ("inference", "drawings"): set(),
    ("inference", "artifacts"): {"read", "list"},
    ("rescore", "drawings"): set(),
    ("rescore", "artifacts"): {"read", "list"},
}


def service_client(root: S3Settings, service: str) -> Minio:
    """A client with the credentials `mnistream-system` starts `service` with."""
    path = credentials_dir(Path(os.environ.get("MNISTREAM_DATA", ROOT / ".data"))) / (
        f"{service}.env"
    )
    assert path.exists(), f"{path} is missing: the stack was set up without service users"
    assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return make_minio(
        root.model_copy(
            update={
                "s3_access_key_id": values["S3_ACCESS_KEY_ID"],
                "s3_secret_access_key": SecretStr(values["S3_SECRET_ACCESS_KEY"]),
            }
        )
    )


def allowed(attempt: Callable[[], object]) -> bool:
    try:
        attempt()
    except S3Error as exc:
        if exc.code != "AccessDenied":
            raise
        return False
    return True


@pytest.mark.parametrize(
    ("service", "which"), sorted(ALLOWED), ids=[f"{s}-{w}" for s, w in sorted(ALLOWED)]
)
def test_a_service_user_may_do_only_its_part(
    s3_settings: S3Settings, service: str, which: str
) -> None:
    root = make_minio(s3_settings)
    bucket = s3_settings.drawings_bucket if which == "drawings" else s3_settings.artifacts_bucket
    probe = f"s3-users-probe/{uuid.uuid4()}"
    root.put_object(bucket, probe, io.BytesIO(b"root's"), 6)
    client = service_client(s3_settings, service)
    mine = f"s3-users-probe/{service}-{uuid.uuid4()}"
    try:
        found = {
            "read": allowed(lambda: client.get_object(bucket, probe).read()),
            "list": allowed(lambda: list(client.list_objects(bucket, prefix="s3-users-probe/"))),
            "write": allowed(lambda: client.put_object(bucket, mine, io.BytesIO(b"x"), 1))
            and allowed(lambda: client.remove_object(bucket, mine)),
        }
        assert {what for what, yes in found.items() if yes} == ALLOWED[(service, which)]
    finally:
        root.remove_object(bucket, probe)
        root.remove_object(bucket, mine)  # no error when it was never written


def test_every_service_with_objects_has_a_user() -> None:
    assert set(SERVICES) == {service for service, _ in ALLOWED}
