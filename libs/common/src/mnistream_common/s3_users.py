"""Each service's own MinIO user, allowed only what the service does with objects.

| user | drawings bucket | artifacts bucket (MLflow's: the ONNX models) |
|---|---|---|
| `mnistream-history` | read, write, delete (it stores and erases drawings) | none |
| `mnistream-inference` | none | read |
| `mnistream-rescore` | none (model inputs come from history-service) | read |

The gateway touches no object. The operator (`mnistream`, the trainer) and the MLflow server keep
the stack's root credentials: they create buckets and users and write models. So a service whose
credentials leak cannot replace a model, and the workers cannot read or change the drawings.

The secrets: `<SERVICE>_S3_SECRET` of `mnistream setup`'s settings where it is set (compose sets
them, for the setup container and for each service), otherwise random, made once by
`mnistream setup` and kept in the stack's data folder (mnistream_common.credentials).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from minio.credentials.providers import StaticProvider
from minio.error import MinioAdminException
from minio.minioadmin import MinioAdmin

from mnistream_common.credentials import service_secret, store_settings
from mnistream_common.settings import S3Settings

SERVICES = ("history", "inference", "rescore")
_READ = ["s3:GetObject"]
_WRITE = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
_LIST = ["s3:ListBucket", "s3:GetBucketLocation"]


@dataclass(frozen=True)
class S3User:
    """One service's MinIO access key and secret."""

    service: str
    secret_key: str

    @property
    def access_key(self) -> str:
        """The user's name in MinIO."""
        return f"mnistream-{self.service}"

    @property
    def policy_name(self) -> str:
        """The policy that holds what it may do."""
        return f"mnistream-{self.service}"

    def env(self) -> dict[str, str]:
        """The settings that make a service use this user."""
        return {"S3_ACCESS_KEY_ID": self.access_key, "S3_SECRET_ACCESS_KEY": self.secret_key}


def policy(service: str, drawings_bucket: str, artifacts_bucket: str) -> dict[str, Any]:
    """The IAM policy of one service's user."""
    objects = {
        "history": {drawings_bucket: _WRITE},
        "inference": {artifacts_bucket: _READ},
        "rescore": {artifacts_bucket: _READ},
    }[service]
    statements = [
        {"Effect": "Allow", "Action": _LIST, "Resource": [f"arn:aws:s3:::{bucket}"]}
        for bucket in objects
    ]
    statements += [
        {"Effect": "Allow", "Action": actions, "Resource": [f"arn:aws:s3:::{bucket}/*"]}
        for bucket, actions in objects.items()
    ]
    return {"Version": "2012-10-17", "Statement": statements}


def ensure_user_files(folder: Path, given: Mapping[str, str]) -> dict[str, S3User]:
    """Every service's user, its secret the one `given` for it (non-empty), else the one in its
    file, else new and random (mnistream_common.credentials)."""
    users = {}
    for service in SERVICES:
        secret = service_secret(folder, service, "S3_SECRET_ACCESS_KEY", given.get(service, ""))
        users[service] = user = S3User(service, secret)
        store_settings(folder, service, user.env())
    return users


def ensure_s3_users(
    settings: S3Settings, users: Mapping[str, S3User], drawings_bucket: str, artifacts_bucket: str
) -> dict[str, str]:
    """Create or update every service's user and policy with the root credentials of
    `settings`. Returns what became of each user: created, updated (its policy differed) or
    unchanged; its secret is set to the given one every time (MinIO does not show it)."""
    endpoint = urlparse(settings.s3_endpoint_url)
    admin = MinioAdmin(
        endpoint=endpoint.netloc,
        credentials=StaticProvider(
            settings.s3_access_key_id, settings.s3_secret_access_key.get_secret_value()
        ),
        region=settings.s3_region,
        secure=endpoint.scheme == "https",
    )
    existing = set(json.loads(admin.user_list() or "{}"))
    done = {}
    for user in users.values():
        wanted = policy(user.service, drawings_bucket, artifacts_bucket)
        same = user.access_key in existing and _statements(_policy_of(admin, user)) == (
            _statements(wanted)
        )
        admin.policy_add(user.policy_name, policy=wanted)
        admin.user_add(user.access_key, user.secret_key)
        try:
            admin.attach_policy([user.policy_name], user=user.access_key)
        except MinioAdminException as exc:
            if "already" not in str(exc).lower():  # attached by an earlier run
                raise
        done[user.access_key] = (
            "unchanged" if same else "updated" if user.access_key in existing else "created"
        )
    return done


def _policy_of(admin: MinioAdmin, user: S3User) -> dict[str, Any]:
    try:
        found: dict[str, Any] = json.loads(admin.policy_info(user.policy_name))
    except MinioAdminException:  # no such policy yet
        return {}
    return found


def _statements(document: dict[str, Any]) -> set[tuple[Any, ...]]:
    return {
        (s["Effect"], frozenset(s["Action"]), frozenset(s["Resource"]))
        for s in document.get("Statement", [])
    }
