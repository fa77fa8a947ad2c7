"""The promotion ledger's state: who is champion and which rollout runs, folded from its records.

Every reader (workers, history-service, the gateway, the CLI) folds the same records in the
same order with `LedgerState.apply`, so they all agree on the champion and the rollout at every
offset, and a restarted reader rebuilds both by reading the ledger again. The rules:

- a promotion makes its model the champion and ends the running rollout (completed when it
  promotes the rollout's candidate, superseded otherwise);
- a rollout starts only when there is a champion, no rollout runs, and its candidate is not
  the champion;
- a change or an abort applies only to the rollout running, named by its id.

A record that does not apply is ignored, with the reason, by every reader alike.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from mnistream_common.events import LedgerEntry, ModelPromoted, ModelRollout

Outcome = Literal["completed", "aborted", "superseded"]
# The canary's share is decided per 10,000ths: a percent with two decimals is exact.
_BUCKETS = 10_000


@dataclass(frozen=True)
class Rollout:
    """A running rollout: the record that started it and the share the candidate has now."""

    started: ModelRollout
    started_offset: int
    percent: float

    @property
    def rollout_id(self) -> uuid.UUID:
        """The rollout's id, named by each of its records."""
        return self.started.rollout_id

    @property
    def shadow(self) -> bool:
        """Whether the candidate reads every drawing and answers none."""
        return self.started.mode == "shadow"

    def step(
        self,
        action: Literal["changed", "aborted"],
        *,
        by: str,
        reason: str,
        percent: float | None = None,
    ) -> ModelRollout:
        """A new step of this rollout (a change of share, or its abort)."""
        return ModelRollout.model_validate(
            self.started.model_dump(exclude={"event_id", "occurred_at"})
            | {
                "action": action,
                "percent": self.percent if percent is None else percent,
                "requested_by": by,
                "reason": reason,
            }
        )

    def candidate_answers(self, digit_id: uuid.UUID) -> bool:
        """Whether the candidate answers this drawing (canary): a hash of the rollout and the
        digit id, so a redelivered drawing is answered by the same version, and the share
        moves whole drawings only when the percent changes."""
        if self.shadow:
            return False
        digest = hashlib.blake2b(self.rollout_id.bytes + digit_id.bytes, digest_size=8).digest()
        return int.from_bytes(digest, "big") % _BUCKETS < round(self.percent * _BUCKETS / 100)


@dataclass(frozen=True)
class Ended:
    """How a rollout ended."""

    rollout: Rollout
    outcome: Outcome
    offset: int
    at: datetime
    reason: str
    by: str


@dataclass
class LedgerState:
    """The champion and the running rollout after the records applied so far."""

    champion: ModelPromoted | None = None
    rollout: Rollout | None = None
    ended: list[Ended] = field(default_factory=list)

    def apply(self, entry: LedgerEntry, offset: int) -> str | None:
        """Apply one record; returns why it was ignored, or None when it applied."""
        if isinstance(entry, ModelPromoted):
            running = self.rollout
            if running is not None:
                completed = running.started.candidate.sha256 == entry.model.sha256
                self._end(
                    running,
                    "completed" if completed else "superseded",
                    offset,
                    entry.promoted_at,
                    entry.reason,
                    entry.promoted_by,
                )
            self.champion = entry
            return None
        return self._rollout_step(entry, offset)

    def _rollout_step(self, step: ModelRollout, offset: int) -> str | None:
        running = self.rollout
        if step.action == "started":
            if self.champion is None:
                return "no champion to roll out beside"
            if running is not None:
                return f"rollout {running.rollout_id} is running"
            if step.candidate.sha256 == self.champion.model.sha256:
                return f"v{step.candidate.version} is the champion"
            self.rollout = Rollout(step, offset, step.percent)
            return None
        if running is None or running.rollout_id != step.rollout_id:
            return f"rollout {step.rollout_id} is not running"
        if step.action == "changed":
            if running.shadow:
                return "a shadow rollout has no share to change"
            self.rollout = replace(running, percent=step.percent)
            return None
        self._end(running, "aborted", offset, step.occurred_at, step.reason, step.requested_by)
        return None

    def _end(
        self, running: Rollout, outcome: Outcome, offset: int, at: datetime, reason: str, by: str
    ) -> None:
        self.ended.append(Ended(running, outcome, offset, at, reason, by))
        self.rollout = None


def rollout_json(rollout: Rollout) -> dict[str, object]:
    """A running rollout as JSON for clients: its start record and its share now."""
    return {
        **rollout.started.model_dump(mode="json", exclude={"action", "percent"}),
        "percent": rollout.percent,
        "started_at": rollout.started.occurred_at.isoformat(),
    }


def fold(entries: Iterable[tuple[int, LedgerEntry]]) -> LedgerState:
    """The state after every (offset, record) of a ledger read from its beginning."""
    state = LedgerState()
    for offset, entry in entries:
        state.apply(entry, offset)
    return state
