"""`Promoter.promote`: a promotion is never half-done silently."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
from mnistream_cli import promotion
from mnistream_cli.promotion import Promoter, PromotionError
from mnistream_cli.registry import RegisteredVersion, UnknownVersionError
from mnistream_cli.settings import Settings
from mnistream_common.events import ModelPromoted

CANDIDATE = RegisteredVersion(
    name="mnist-digits",
    version=3,
    architecture="cnn",
    test_accuracy=0.99,
    sha256="ab" * 32,
    onnx_uri="s3://mlflow/models/v3.onnx",
    created_at=datetime(2026, 3, 1, tzinfo=UTC),
    aliases=(),
    tags={},
)


class FakeRegistry:
    """The champion alias, and whether moving it works."""

    def __init__(self, alias: int | None, *, undo_fails: bool = False) -> None:
        self.alias = alias
        self.undo_fails = undo_fails
        self.moves: list[int | None] = []

    def champion_alias(self) -> int | None:
        return self.alias

    def set_champion(self, version: int | None) -> None:
        if self.moves and self.undo_fails:
            raise RuntimeError("MLflow is down")
        self.moves.append(version)
        self.alias = version


@pytest.fixture
def promoter(monkeypatch: pytest.MonkeyPatch) -> tuple[Promoter, FakeRegistry, list[Any]]:
    registry = FakeRegistry(alias=2)
    ledger: list[ModelPromoted] = []
    monkeypatch.setattr(Promoter, "registry", property(lambda self: registry))

    async def read(self: Promoter) -> list[ModelPromoted]:
        return list(ledger)

    monkeypatch.setattr(Promoter, "ledger", read)
    return Promoter(Settings(_env_file=None)), registry, ledger


def publishing(outcome: str, ledger: list[Any]) -> Any:
    async def publish(servers: str, event: ModelPromoted) -> None:
        if outcome in ("ok", "late"):
            ledger.append(event)
        if outcome != "ok":
            raise TimeoutError("no acknowledgement within 15 s")

    return publish


async def test_a_published_promotion_moves_the_alias(
    promoter: tuple[Promoter, FakeRegistry, list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    subject, registry, ledger = promoter
    monkeypatch.setattr(promotion, "publish_promotion", publishing("ok", ledger))

    event = await subject.promote(CANDIDATE, previous=2, reason="better")

    assert registry.alias == 3 and ledger == [event]
    assert event.previous_version == 2 and event.reason == "better"


async def test_a_failed_publish_puts_the_alias_back_and_says_so(
    promoter: tuple[Promoter, FakeRegistry, list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    subject, registry, ledger = promoter
    monkeypatch.setattr(promotion, "publish_promotion", publishing("lost", ledger))

    with pytest.raises(PromotionError, match="put back to v2, nothing was promoted"):
        await subject.promote(CANDIDATE, previous=2, reason="better")

    assert registry.moves == [3, 2] and ledger == []


async def test_an_event_acknowledged_after_the_wait_counts_as_promoted(
    promoter: tuple[Promoter, FakeRegistry, list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    subject, registry, ledger = promoter
    monkeypatch.setattr(promotion, "publish_promotion", publishing("late", ledger))

    event = await subject.promote(CANDIDATE, previous=2, reason="better")

    assert registry.alias == 3 and ledger == [event], "the ledger has it: the alias stays"


async def test_a_failed_undo_is_reported_not_hidden(
    promoter: tuple[Promoter, FakeRegistry, list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    subject, registry, ledger = promoter
    registry.undo_fails = True
    monkeypatch.setattr(promotion, "publish_promotion", publishing("lost", ledger))

    with pytest.raises(PromotionError, match="alias points at v3 but no worker serves it"):
        await subject.promote(CANDIDATE, previous=2, reason="better")


class RegistryWithout(FakeRegistry):
    """Knows only the candidate: the ledger's champion is not registered (a forged promotion)."""

    def get(self, version: int) -> RegisteredVersion:
        if version == CANDIDATE.version:
            return dataclasses.replace(
                CANDIDATE,
                tags={t: "x" for t in ("onnx_uri", "onnx_sha256", "architecture", "test_accuracy")},
            )
        raise UnknownVersionError(f"mnist-digits has no version {version}")


async def test_a_registered_version_replaces_an_unregistered_champion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator's repair after a forged promotion: the gate has nothing to compare with,
    objects to nothing, and the ledger's version is recorded as the previous one."""
    registry = RegistryWithout(alias=3)
    forged = ModelPromoted.model_validate(
        {
            "model": {"name": "mnist-digits", "version": 1002, "sha256": "cd" * 32},
            "onnx_uri": "s3://mlflow/models/v1002.onnx",
            "architecture": "cnn",
            "metrics": {},
            "promoted_by": "someone@elsewhere",
            "promoted_at": datetime(2026, 3, 2, tzinfo=UTC),
            "reason": "",
            "previous_version": 3,
        }
    )
    monkeypatch.setattr(Promoter, "registry", property(lambda self: registry))

    async def read(self: Promoter) -> list[ModelPromoted]:
        return [forged]

    monkeypatch.setattr(Promoter, "ledger", read)
    report = await Promoter(Settings(_env_file=None)).check(CANDIDATE.version)

    assert report.champion is None and report.serving == 1002
    assert report.objections == []
