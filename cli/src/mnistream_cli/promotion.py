"""Promoting a model version: the quality gate, the `champion` alias, the `model.promoted` event.

The alias and the event move together: if the event cannot be published, the alias is put
back, so a promotion is either complete or visibly not done.
"""

from __future__ import annotations

import contextlib
import getpass
import socket
from dataclasses import dataclass, field

from mnistream_common.events import DriftReference, ModelPromoted, utc_now
from mnistream_common.history_api import LabeledOut
from mnistream_common.history_client import (
    HistoryClient,
    HistoryRefusedError,
    HistoryUnavailableError,
)
from mnistream_common.kafka import read_ledger
from mnistream_common.logs import get_logger

from mnistream_cli.kafka_ops import publish_promotion
from mnistream_cli.registry import RegisteredVersion, Registry, UnknownVersionError
from mnistream_cli.settings import Settings

log = get_logger(__name__)


class PromotionError(Exception):
    """The promotion did not happen; the message says why and what to do."""


@dataclass
class GateReport:
    """The numbers the quality gate compared, and its objections."""

    candidate: RegisteredVersion
    champion: RegisteredVersion | None
    # The ledger's newest version, registered or not (a forged promotion, a deleted version).
    serving: int | None = None
    labeled: int = 0
    candidate_label_accuracy: float | None = None
    champion_label_accuracy: float | None = None
    # Of the labeled drawings the champion reads right, how many the candidate misreads
    # (negative flips), and of those it misreads, how many the candidate reads right.
    champion_right: int = 0
    negative_flips: int | None = None
    positive_flips: int | None = None
    objections: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def judged_labels(report: GateReport, labeled: list[LabeledOut]) -> list[LabeledOut]:
    """The labeled drawings the gate may judge both versions on: only the held-out ones when
    either learnt from user labels (`mnistream train --labels`), which would otherwise be judged
    on its own training data. The split is by id alone, the same in every dataset version."""
    from mnistream_cli.datasets import split_of

    learnt = [v for v in (report.candidate, report.champion) if v and v.tags.get("dataset_version")]
    if not learnt:
        return labeled
    held = [item for item in labeled if split_of(item.digit_id) == "heldout"]
    names = ", ".join(f"v{v.version}" for v in learnt)
    report.notes.append(
        f"{names} learnt from user labels: judged on the {len(held)} held-out labeled drawings "
        f"of {len(labeled)}"
    )
    return held


@dataclass(frozen=True)
class FlipRule:
    """How many negative flips the gate tolerates: a share of the labeled drawings the champion
    reads right, judged once there are enough of those for a share to mean something."""

    max_share: float = 0.05
    min_labels: int = 50


def gate(report: GateReport, flips: FlipRule | None = None) -> GateReport:
    """Object when the candidate is worse than the champion on test data or on user labels, or
    misreads too many labeled drawings the champion reads right."""
    flips = flips or FlipRule()
    candidate, champion = report.candidate, report.champion
    if champion is None:
        return report
    if candidate.version == champion.version:
        report.objections.append(f"version {candidate.version} is already the champion")
    if (
        candidate.test_accuracy is not None
        and champion.test_accuracy is not None
        and candidate.test_accuracy < champion.test_accuracy
    ):
        report.objections.append(
            f"test accuracy {candidate.test_accuracy:.4f} is below the champion's "
            f"(v{champion.version}) {champion.test_accuracy:.4f}"
        )
    new, old = report.candidate_label_accuracy, report.champion_label_accuracy
    if new is not None and old is not None and new < old:
        report.objections.append(
            f"accuracy on {report.labeled} user-labeled drawings {new:.4f} is below the "
            f"champion's {old:.4f}"
        )
    _judge_flips(report, flips)
    return report


def _judge_flips(report: GateReport, flips: FlipRule) -> None:
    broken, right = report.negative_flips, report.champion_right
    if broken is None or report.champion is None:
        return
    if right < flips.min_labels:
        report.notes.append(
            f"negative flips not judged: the champion reads {right} labeled drawings right, "
            f"fewer than the {flips.min_labels} a share needs"
        )
        return
    if broken > flips.max_share * right:
        report.objections.append(
            f"it misreads {broken} of the {right} user-labeled drawings the champion "
            f"(v{report.champion.version}) reads right ({broken / right:.1%}, more than "
            f"{flips.max_share:.1%})"
        )


def promoted_by() -> str:
    """Who promotes: user@host."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


@dataclass
class Promoter:
    """Runs promotions against the registry, Kafka and (for the gate) the history."""

    settings: Settings

    @property
    def registry(self) -> Registry:
        """The registered model."""
        return Registry(self.settings.mlflow_tracking_uri, self.settings.registered_model_name)

    async def ledger(self) -> list[ModelPromoted]:
        """The promotion ledger, oldest first."""
        return await read_ledger(self.settings)

    async def check(self, version: int) -> GateReport:
        """Load the candidate and the champion and run the quality gate."""
        registry = self.registry
        candidate = registry.get(version)
        if missing := candidate.missing_tags():
            raise PromotionError(
                f"version {version} lacks the tags {', '.join(missing)}; only versions "
                "registered by `mnistream train` can be promoted"
            )
        ledger = await self.ledger()
        report = GateReport(candidate, None, serving=ledger[-1].model.version if ledger else None)
        # An unregistered champion (forged, or deleted since) leaves nothing to compare with;
        # promoting a registered version is how an operator repairs the ledger: no objection.
        if report.serving is not None:
            with contextlib.suppress(UnknownVersionError):
                report.champion = registry.get(report.serving)
        champion = report.champion
        if champion is not None and champion.version != candidate.version:
            await self._label_scores(report)
        rule = FlipRule(
            self.settings.max_negative_flip_share, self.settings.negative_flip_min_labels
        )
        return gate(report, rule)

    async def _label_scores(self, report: GateReport) -> None:
        # Scoring the labels needs ONNX Runtime, numpy and MinIO's client (a quarter of a
        # second to import): only the promotions that score them pay it, not every command.
        from mnistream_common.storage import ObjectStore, make_minio

        from mnistream_cli.labels import ModelRunError, compare, label_readings

        async with HistoryClient.at(self.settings.history_url) as history:
            try:
                labeled = judged_labels(report, await history.labeled())
                if not labeled or report.champion is None:
                    return
                store = ObjectStore(make_minio(self.settings))
                bucket = self.settings.artifacts_bucket
                compared = compare(
                    labeled,
                    await label_readings(store, bucket, history, report.candidate, labeled),
                    await label_readings(store, bucket, history, report.champion, labeled),
                )
                report.labeled = compared.labeled
                report.candidate_label_accuracy = compared.candidate_accuracy
                report.champion_label_accuracy = compared.champion_accuracy
                report.champion_right = compared.champion_right
                report.negative_flips, report.positive_flips = compared.broken, compared.fixed
            except (HistoryUnavailableError, HistoryRefusedError) as exc:
                report.objections.append(f"accuracy on user labels cannot be checked: {exc}")
            except ModelRunError as exc:  # a model that fails at run time: refused, not a crash
                report.objections.append(str(exc))

    async def promote(
        self, candidate: RegisteredVersion, *, previous: int | None, reason: str
    ) -> ModelPromoted:
        """Move the alias, publish the event; undo the alias if the event is not acknowledged."""
        registry = self.registry
        old_alias = registry.champion_alias()
        reference = await self.drift_reference(candidate)
        event = ModelPromoted(
            model=candidate.ref,
            previous_version=previous,
            onnx_uri=candidate.onnx_uri,
            architecture=candidate.architecture,
            metrics={"test_accuracy": candidate.test_accuracy or 0.0},
            promoted_by=promoted_by(),
            reason=reason,
            promoted_at=utc_now(),
            drift_reference=reference,
        )
        registry.set_champion(candidate.version)
        try:
            await publish_promotion(self.settings, event)
        except Exception as exc:  # any failure to publish: undo the alias, say so
            if await self._landed(event):  # acknowledged too late for the wait, but in the ledger
                return event
            try:
                registry.set_champion(old_alias)
            except Exception as undo:
                raise PromotionError(
                    f"publishing model.promoted failed ({exc!r}) and putting the champion alias "
                    f"back failed too ({undo!r}): MLflow's alias points at v{candidate.version} "
                    "but no worker serves it. Promote the version you want again once MLflow "
                    "and Kafka answer."
                ) from exc
            restored = f"v{old_alias}" if old_alias else "no champion"
            raise PromotionError(
                f"publishing model.promoted failed ({exc!r}); the champion alias was put back "
                f"to {restored}, nothing was promoted. Is Kafka up (`make infra-status`)?"
            ) from exc
        return event

    async def drift_reference(self, candidate: RegisteredVersion) -> DriftReference | None:
        """The reference distributions `mnistream train` logged with the version, read from
        MinIO; None (drift is then not measured while it serves) for a version trained before
        references existed, or one whose reference cannot be read."""
        from mnistream_common.storage import ObjectStore, S3Uri, make_minio

        uri = candidate.tags.get("drift_reference_uri")
        if not uri:
            return None
        try:
            raw = await ObjectStore(make_minio(self.settings)).get(S3Uri.parse(uri))
            return DriftReference.model_validate_json(raw)
        except Exception as exc:  # unreadable: the promotion goes on, without drift signals
            log.warning("drift reference unreadable", uri=uri, error=repr(exc))
            return None

    async def _landed(self, event: ModelPromoted) -> bool:
        """Whether `event` is in the ledger after all (the producer has stopped by now)."""
        try:
            return any(e.event_id == event.event_id for e in await self.ledger())
        except Exception:  # Kafka unreachable: it cannot be confirmed, so it is undone
            return False
