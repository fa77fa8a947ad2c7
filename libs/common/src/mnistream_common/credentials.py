"""A native stack's secrets of each service: `credentials/<service>.env` in the stack's data
folder, readable by its owner only.

`mnistream setup` writes them (each service's MinIO user, mnistream_common.s3_users, and Kafka
user, mnistream_cli.kafka_users); `mnistream-system` adds a service's file to the environment it
starts that service with. A secret given in setup's settings wins; otherwise the one already in
the file is kept, so a second setup changes nothing; otherwise a new random one is made.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path

CREDENTIALS_DIR = "credentials"


def credentials_dir(data_folder: Path) -> Path:
    """Where a native stack keeps each service's `<service>.env`."""
    return data_folder / CREDENTIALS_DIR


def service_secret(folder: Path, service: str, key: str, given: str = "") -> str:
    """`given` when it is not empty, else the secret the service's file holds under `key`, else
    a new random one."""
    return given or stored_settings(folder, service).get(key) or secrets.token_urlsafe(24)


def store_settings(folder: Path, service: str, settings: Mapping[str, str]) -> None:
    """Put `settings` in the service's file beside what it holds; written only when it
    changes."""
    path = folder / f"{service}.env"
    stored = stored_settings(folder, service)
    wanted = {**stored, **settings}
    if wanted != stored:
        folder.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text("".join(f"{k}={v}\n" for k, v in sorted(wanted.items())))


def stored_settings(folder: Path, service: str) -> dict[str, str]:
    """What the service's file holds (nothing when there is none)."""
    path = folder / f"{service}.env"
    if not path.exists():
        return {}
    pairs = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith("#"):
            pairs[key.strip()] = value.strip()
    return pairs
