"""`mnistream retrain`: from the labels people gave to a released model, as a chain of steps.

    snapshot ─▶ train (MNIST + the snapshot's train split) ─▶ evaluate (every stored drawing:
    flip report, the gate's verdict) ─▶ canary (the promotion gate first) ─▶ watch: promote once
    significantly not worse on labels, or end with the canary's abort

No scheduler and no state of its own: every step is an existing command's action, and each one
first looks for what an earlier run of the same retrain left behind and goes on from there.

- the snapshot is named by its labels (the same labels are the same version, written once);
- the trained version carries the tag `retrain_key` (the dataset version and the training
  config), so a retrain that crashed after registering finds it instead of training again;
- the evaluation is a rescore job whose id is derived from the version: a second run follows
  (or reuses) it;
- the canary and the promotion are ledger records; a canary of a retrained version that is
  still running is resumed before anything else;

and the step a version reached is its MLflow tag `retrain_step` (trained, evaluated, canary,
promoted, refused or aborted), beside the ledger's records, whose reason names the retrain.

It starts when asked (`mnistream retrain`), or from a signal: `--if-new-labels N` goes on only
when N drawings were labelled since the dataset the champion learnt from, `--if-drift` only when
a drift signal is past its threshold. Cron, a Kubernetes CronJob or an alert's webhook can run
it as often as they like: with nothing new it does nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Final, TypeVar

import typer
from mnistream_common.history_client import (
    HistoryClient,
    HistoryRefusedError,
    HistoryUnavailableError,
)

from mnistream_cli import rollout
from mnistream_cli.operate import console, evaluate_version, fail
from mnistream_cli.promotion import Promoter
from mnistream_cli.registry import RegisteredVersion, RegistryError
from mnistream_cli.settings import Settings
from mnistream_cli.train import Arch, Device

if TYPE_CHECKING:
    from trainer.config import TrainConfig

    from mnistream_cli.datasets import Snapshot

# Evaluation jobs of a retrain: uuid5 of the version and its bytes, so a second run finds it.
RETRAIN_JOBS: Final = uuid.UUID("5d0c8e3a-8f1e-4d43-9a57-0b7a1c2e4f60")
KEY_TAG: Final = "retrain_key"
STEP_TAG: Final = "retrain_step"

T = TypeVar("T")


class Step(StrEnum):
    """Where a retrain can stop (`--until`)."""

    snapshot = "snapshot"
    train = "train"
    evaluate = "evaluate"
    canary = "canary"
    promote = "promote"


ORDER: Final = list(Step)


@dataclass(frozen=True)
class Release:
    """How the candidate is released: the canary's share and when `watch` completes it."""

    percent: float
    completion: rollout.Completion
    interval_s: float
    timeout_s: float
    evaluate_timeout_s: float


def retrain(
    arch: Annotated[Arch, typer.Option(help="cnn or mlp.")] = Arch.cnn,
    epochs: Annotated[int | None, typer.Option(help="Default: 4 (cnn), 3 (mlp).")] = None,
    hidden: Annotated[int, typer.Option(help="MLP hidden units.")] = 10,
    limit_train: Annotated[
        int | None, typer.Option(help="Train on the first N MNIST images only (quick runs).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Same seed and labels, same model.")] = 0,
    device: Annotated[Device, typer.Option(help="auto picks CUDA when available.")] = Device.auto,
    workers: Annotated[int, typer.Option(help="Batch-preparing worker processes.")] = 2,
    percent: Annotated[
        float, typer.Option(min=0.01, max=100, help="Share of live drawings the canary answers.")
    ] = 10.0,
    min_labels: Annotated[
        int, typer.Option(min=1, help="Labeled drawings per version before completing.")
    ] = 100,
    margin: Annotated[
        float, typer.Option(min=0, max=1, help="How much worse on labels still counts as not.")
    ] = 0.01,
    interval: Annotated[float, typer.Option(min=0.5, help="Seconds between looks.")] = 5.0,
    timeout: Annotated[
        float, typer.Option(min=1, help="Give the canary up (it keeps running) after this.")
    ] = 3600,
    until: Annotated[Step, typer.Option(help="Stop after this step.")] = Step.promote,
    if_new_labels: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Go on only when this many drawings were labeled since the dataset the "
            "champion learnt from.",
        ),
    ] = None,
    if_drift: Annotated[
        bool, typer.Option(help="Go on only when a drift signal is past its threshold.")
    ] = False,
) -> None:
    """Snapshot the labels, train on MNIST and them, evaluate on every stored drawing, release
    as a canary (through the promotion gate) and promote it once significantly not worse on
    labels. Run again after a crash, or as often as you like: each step goes on from what the
    last run left."""
    from mnistream_cli.train import training_config

    settings = Settings()
    promoter = Promoter(settings)
    config = training_config(
        arch=arch.value, epochs=epochs, hidden=hidden, limit_train=limit_train, seed=seed,
        device=device.value, workers=workers,
    )  # fmt: skip
    release = Release(percent, rollout.Completion(min_labels, margin), interval, timeout, timeout)
    if _resumed(settings, promoter, release):
        return
    if not _triggered(settings, promoter, if_new_labels, if_drift):
        return
    Retrain(settings, promoter, config, release, until).run()


def _resumed(settings: Settings, promoter: Promoter, release: Release) -> bool:
    """Watch a retrain's canary that is still running (an earlier run crashed or gave up)."""
    running = asyncio.run(rollout.ledger_state(settings)).rollout
    if running is None:
        return False
    version = running.started.candidate.version
    tags = _registered(promoter, version).tags
    if not tags.get(KEY_TAG):
        return False  # someone's own canary: the retrain below refuses to start beside it
    console.print(
        f"resuming: the canary of v{version} (retrain {tags[KEY_TAG]}) is running; watching it"
    )
    _watch(settings, promoter, version, release)
    return True


def _triggered(settings: Settings, promoter: Promoter, new_labels: int | None, drift: bool) -> bool:
    """Whether the conditions asked for hold; says why not when they do not."""
    if drift:
        alarms = asyncio.run(_alarms(settings))
        if not alarms:
            console.print("nothing to do: no drift signal is past its threshold")
            return False
        console.print(f"drift: {'; '.join(alarms)}")
    if new_labels is not None:
        labeled, learnt, dataset = asyncio.run(_label_counts(settings, promoter))
        found = (
            f"{labeled - learnt} drawings labeled since the champion's dataset {dataset[:12]}"
            if dataset
            else f"{labeled} drawings labeled; the champion learnt from MNIST alone"
        )
        if labeled - learnt < new_labels:
            console.print(f"nothing to do: {found}; fewer than {new_labels}")
            return False
        console.print(found)
    return True


async def _alarms(settings: Settings) -> list[str]:
    async with HistoryClient.at(settings.history_url) as history:
        try:
            return (await history.drift()).alarms
        except (HistoryUnavailableError, HistoryRefusedError) as exc:
            raise fail(f"drift is not available: {exc}") from exc


async def _label_counts(settings: Settings, promoter: Promoter) -> tuple[int, int, str | None]:
    """(labeled drawings now, rows of the champion's dataset, that dataset's version)."""
    from mnistream_common.storage import ObjectStore, make_minio

    from mnistream_cli.datasets import read_snapshot

    async with HistoryClient.at(settings.history_url) as history:
        labeled = len(await history.labeled())
    ledger = await promoter.ledger()
    if not ledger:
        return labeled, 0, None
    dataset = _registered(promoter, ledger[-1].model.version).tags.get("dataset_version")
    if not dataset:
        return labeled, 0, None
    store = ObjectStore(make_minio(settings))
    found = await read_snapshot(store, settings.datasets_bucket, dataset)
    return labeled, int(found.manifest["rows"]), dataset


def _registered(promoter: Promoter, version: int) -> RegisteredVersion:
    try:
        return promoter.registry.get(version)
    except RegistryError as exc:
        raise fail(str(exc)) from exc


def retrain_key(dataset_version: str, config: TrainConfig) -> str:
    """Names one retrain: the labels it learns from and how it trains (not where it runs)."""
    how = config.model_dump_json(exclude={"device", "workers"})
    return hashlib.sha256(f"{dataset_version}\n{how}".encode()).hexdigest()[:16]


@dataclass
class Retrain:
    """One run of the chain, each step going on from what an earlier run left."""

    settings: Settings
    promoter: Promoter
    config: TrainConfig
    release: Release
    until: Step

    def run(self) -> None:
        """The steps in order, up to `until`."""
        snapshot = self._step(Step.snapshot, self.snapshot)
        if snapshot is None:
            return
        candidate = self._step(Step.train, lambda: self.train(snapshot))
        if candidate is None:
            return
        if self._step(Step.evaluate, lambda: self.evaluate(candidate)) is None:
            return
        if self._step(Step.canary, lambda: self.canary(candidate, snapshot)) is None:
            return
        self._step(Step.promote, lambda: self.promote(candidate))

    def _step(self, step: Step, action: Callable[[], T]) -> T | None:
        """Run `step` if `until` allows it; None when the chain stops before it."""
        if ORDER.index(step) > ORDER.index(self.until):
            return None
        console.rule(f"[bold]{step.value}")
        return action()

    def snapshot(self) -> Snapshot:
        """Every labeled drawing as a dataset version (the same labels: the same version)."""
        from mnistream_cli.dataset import take

        return take(self.settings)

    def train(self, snapshot: Snapshot) -> RegisteredVersion:
        """The version this retrain trained before, or a new one trained now."""
        from mnistream_cli.train import label_set, run_training

        key = retrain_key(snapshot.version, self.config)
        registry = self.promoter.registry
        try:
            earlier = [v for v in registry.versions() if v.tags.get(KEY_TAG) == key]
        except RegistryError as exc:
            raise fail(str(exc)) from exc
        if earlier:
            version = earlier[-1]  # the oldest: what a second registration would repeat
            console.print(
                f"trained already: v{version.version} (retrain {key}), test accuracy "
                f"{version.test_accuracy}, held-out accuracy {version.tags.get('heldout_accuracy')}"
            )
            return version
        registered = run_training(self.config, console, label_set(snapshot.version), key)
        console.print(
            f"registered v{registered.version} (retrain {key}): test accuracy "
            f"{registered.test_accuracy:.4f}, held-out accuracy "
            f"{registered.heldout_accuracy if registered.heldout_accuracy is not None else '-'}"
        )
        version = _registered(self.promoter, registered.version)
        self._mark(version, "trained")
        return version

    def evaluate(self, candidate: RegisteredVersion) -> RegisteredVersion:
        """Every stored drawing read by the candidate: the flip report and the gate's verdict."""
        job_id = uuid.uuid5(RETRAIN_JOBS, f"{candidate.version}:{candidate.sha256}")
        asyncio.run(
            evaluate_version(
                self.settings,
                self.promoter,
                candidate.version,
                self.release.evaluate_timeout_s,
                job_id,
            )
        )
        self._mark(candidate, "evaluated")
        return candidate

    def canary(self, candidate: RegisteredVersion, snapshot: Snapshot) -> RegisteredVersion:
        """Start the canary (the promotion gate first); refused: the reason, and exit 1."""
        state = asyncio.run(rollout.ledger_state(self.settings))
        if state.champion is not None and state.champion.model.version == candidate.version:
            console.print(f"v{candidate.version} is the champion already: nothing to release")
            self._mark(candidate, "promoted")
            raise typer.Exit(0)
        ended = [e for e in state.ended if e.rollout.started.candidate.version == candidate.version]
        if ended and ended[-1].outcome == "aborted":
            last = ended[-1]
            self._mark(candidate, "aborted")
            raise fail(
                f"the canary of v{candidate.version} was aborted by {last.by} ({last.reason}); "
                "label more drawings and retrain (a new snapshot trains a new version)"
            )
        reason = (
            f"retrain {candidate.tags.get(KEY_TAG, '?')}: dataset {snapshot.version[:12]}, "
            f"held-out accuracy {candidate.tags.get('heldout_accuracy', '-')}"
        )
        try:
            asyncio.run(
                rollout.start(
                    self.settings,
                    self.promoter,
                    candidate.version,
                    "canary",
                    self.release.percent,
                    reason,
                    force=False,
                )
            )
        except typer.Exit as refused:
            if refused.exit_code:
                self._mark(candidate, "refused")
            raise
        self._mark(candidate, "canary")
        return candidate

    def promote(self, candidate: RegisteredVersion) -> None:
        """Watch the canary until its verdict promotes the candidate, or it is aborted."""
        _watch(self.settings, self.promoter, candidate.version, self.release)

    def _mark(self, version: RegisteredVersion, step: str) -> None:
        try:
            self.promoter.registry.tag(version.version, STEP_TAG, step)
        except RegistryError as exc:  # the step itself is done; only its mark is missing
            console.print(f"[yellow]could not tag v{version.version} {STEP_TAG}={step}: {exc}[/]")


def _watch(settings: Settings, promoter: Promoter, version: int, release: Release) -> None:
    """`rollout watch --complete`, then the version's `retrain_step` from how it ended."""
    registry = promoter.registry
    try:
        asyncio.run(
            rollout.watch_running(
                settings, promoter, release.completion, release.interval_s, release.timeout_s
            )
        )
    except typer.Exit as ended:
        if ended.exit_code:
            state = asyncio.run(rollout.ledger_state(settings))
            mine = [e for e in state.ended if e.rollout.started.candidate.version == version]
            if mine and mine[-1].outcome == "aborted" and state.rollout is None:
                registry.tag(version, STEP_TAG, "aborted")
        raise
    registry.tag(version, STEP_TAG, "promoted")
