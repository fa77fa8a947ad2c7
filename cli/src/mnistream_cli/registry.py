"""The MLflow model registry as the CLI sees it: registered versions and the `champion` alias."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mnistream_common.events import ModelRef

CHAMPION = "champion"
REQUIRED_TAGS = ("onnx_uri", "onnx_sha256", "architecture", "test_accuracy")


class RegistryError(Exception):
    """The registry cannot answer, or a version is unusable; the message says what to do."""


class UnknownVersionError(RegistryError):
    """The registry answered: no such version."""


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version with the tags `mnistream train` sets."""

    name: str
    version: int
    architecture: str
    test_accuracy: float | None
    sha256: str
    onnx_uri: str
    created_at: datetime
    aliases: tuple[str, ...]
    tags: dict[str, str]

    @property
    def ref(self) -> ModelRef:
        """The version as events carry it."""
        return ModelRef(name=self.name, version=self.version, sha256=self.sha256)

    def missing_tags(self) -> list[str]:
        """Tags that a promotable version must have but this one lacks."""
        return [t for t in REQUIRED_TAGS if not self.tags.get(t)]


class Registry:
    """Thin wrapper over MlflowClient for one registered model."""

    def __init__(self, tracking_uri: str, name: str) -> None:
        # MLflow takes about a second to import: only the commands that use the registry pay it
        # (`mnistream status` never does).
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.name = name
        self._tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._failed = MlflowException

    def versions(self) -> list[RegisteredVersion]:
        """Every registered version, newest first."""
        try:
            found = self._client.search_model_versions(f"name='{self.name}'")
        except self._failed as exc:
            raise self._unreachable(exc) from exc
        return sorted((_version(v) for v in found), key=lambda v: v.version, reverse=True)

    def get(self, version: int) -> RegisteredVersion:
        """One version, or a RegistryError naming the versions that exist."""
        try:
            return _version(self._client.get_model_version(self.name, str(version)))
        except self._failed as exc:
            if "RESOURCE_DOES_NOT_EXIST" not in str(exc) and "not found" not in str(exc).lower():
                raise self._unreachable(exc) from exc
        known = ", ".join(str(v.version) for v in self.versions()) or "none yet"
        raise UnknownVersionError(
            f"{self.name} has no version {version}; registered versions: {known} "
            "(train one with `mnistream train`)"
        )

    def champion_alias(self) -> int | None:
        """The version the `champion` alias points at, if any."""
        try:
            return int(self._client.get_model_version_by_alias(self.name, CHAMPION).version)
        except self._failed:
            return None

    def set_champion(self, version: int | None) -> None:
        """Point the `champion` alias at `version` (None removes it)."""
        try:
            if version is None:
                self._client.delete_registered_model_alias(self.name, CHAMPION)
            else:
                self._client.set_registered_model_alias(self.name, CHAMPION, str(version))
        except self._failed as exc:
            raise self._unreachable(exc) from exc

    def tag(self, version: int, key: str, value: str) -> None:
        """Set one tag of a version."""
        try:
            self._client.set_model_version_tag(self.name, str(version), key, value)
        except self._failed as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: Exception) -> RegistryError:
        return RegistryError(
            f"the MLflow registry at {self._tracking_uri} failed: {exc}; is the stack up "
            "(`make infra-up`)?"
        )


def _version(v: Any) -> RegisteredVersion:
    tags = dict(v.tags or {})
    accuracy = tags.get("test_accuracy")
    return RegisteredVersion(
        name=v.name,
        version=int(v.version),
        architecture=tags.get("architecture", "?"),
        test_accuracy=float(accuracy) if accuracy else None,
        sha256=tags.get("onnx_sha256", ""),
        onnx_uri=tags.get("onnx_uri", ""),
        created_at=datetime.fromtimestamp(int(v.creation_timestamp) / 1000, UTC),
        aliases=tuple(getattr(v, "aliases", ()) or ()),
        tags=tags,
    )
