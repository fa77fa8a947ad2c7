"""Rollout guardrails: history-service ends a rollout on its own when its verdict says the
candidate must not go on, with the reason in the ledger.

Every few seconds the running rollout's figures are counted again (from the readings and labels
stored, with 99 % intervals: a guardrail acts without a person, so it needs stronger evidence
than a status read by one) and the rollout is aborted when

- the candidate is significantly worse than the champion on user-labeled drawings,
- the candidate fails on significantly more than the bound's share of the drawings it is given
  (its failures are the inference workers' dead letters naming it), or
- the candidate of a canary has an end-to-end p99 latency over the bound, over enough readings,
  and more than 1.5 times the champion's over the same time (a fault that slows every drawing,
  such as a worker killed, slows both shares and ends nothing).

Before it aborts, a guardrail confirms with the ledger itself that the rollout still runs (the
tables can lag it). Several history-service instances may still abort the same rollout: the
ledger's fold applies the first abort and ignores the others. The check repeats every few seconds,
so over a long rollout the chance of a false abort is above the 1 % of one test.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mnistream_common.history_api import RolloutOut
from mnistream_common.kafka import publish_ledger, read_ledger_entries
from mnistream_common.ledger import Rollout, fold
from mnistream_common.logs import get_logger
from mnistream_common.settings import KafkaSettings
from sqlalchemy.ext.asyncio import AsyncEngine

from history_service.metrics import HistoryMetrics
from history_service.rollouts import Z99, Evidence, judged_rollout, ledger_state

log = get_logger(__name__)
GUARDRAIL = "history-service guardrail"


@dataclass(frozen=True)
class Rules:
    """When a guardrail ends a rollout."""

    min_labels: int = 30
    max_p99_ms: float = 1000.0
    min_readings: int = 100  # before latency is judged
    max_failure_rate: float = 0.01
    # A canary's shares are read by the same workers from the same partitions, so a fault that
    # delays them all (a worker killed, a rebalance) delays both: the candidate's p99 is judged
    # only when it is also this many times the champion's.
    latency_ratio: float = 1.5


def objection(rollout: RolloutOut, rules: Rules) -> str | None:
    """Why the rollout must end now, or None."""
    if rollout.judged == "behind":
        return f"the candidate is significantly worse on user labels (99 %): {rollout.verdict}"
    candidate = next(v for v in rollout.versions if v.role == "candidate")
    low = candidate.failure_low
    if low is not None and low > rules.max_failure_rate:
        given = candidate.readings + candidate.failed
        return (
            f"the candidate failed on {candidate.failed} of the {given} drawings it was given "
            f"(99 % interval from {low * 100:.1f} %), above the "
            f"{rules.max_failure_rate * 100:g} % bound"
        )
    if rollout.mode == "shadow":
        return None  # a shadow candidate reads after the champion's answer: its latency says
        # how long the pair took, not how long people would wait for it
    p99 = candidate.latency_p99_ms
    if p99 is None or candidate.readings < rules.min_readings or p99 <= rules.max_p99_ms:
        return None
    champion = next(v for v in rollout.versions if v.role == "champion")
    theirs = champion.latency_p99_ms
    if theirs is not None and champion.readings >= rules.min_readings:
        if p99 <= rules.latency_ratio * theirs:
            return None  # both shares slow: the same workers and partitions, not the candidate
        return (
            f"the candidate's p99 latency {p99:.0f} ms over {candidate.readings} readings is "
            f"above the {rules.max_p99_ms:.0f} ms bound and {p99 / theirs:.1f}× the champion's "
            f"({theirs:.0f} ms)"
        )
    return (
        f"the candidate's p99 latency {p99:.0f} ms over {candidate.readings} readings is "
        f"above the {rules.max_p99_ms:.0f} ms bound"
    )


@dataclass
class Guardrails:
    """Watches the running rollout; aborts it when `objection` says so."""

    engine: AsyncEngine
    kafka: KafkaSettings
    rules: Rules
    metrics: HistoryMetrics
    interval_s: float = 5.0

    async def run(self) -> None:
        """Check every `interval_s` until cancelled; a failed check is logged and retried."""
        while True:
            try:
                await self.check()
            except Exception as exc:  # Postgres or Kafka away: the next round tries again
                log.warning("rollout guardrails could not check", error=repr(exc))
            await asyncio.sleep(self.interval_s)

    async def check(self) -> str | None:
        """Judge the running rollout once; returns the reason it was aborted for, if it was."""
        async with self.engine.connect() as conn:
            running = (await ledger_state(conn)).rollout
            if running is None:
                self._observe(None)
                return None
            judged = await judged_rollout(conn, running, Evidence(self.rules.min_labels, Z99))
        self._observe(judged)
        reason = objection(judged, self.rules)
        if reason is not None and await self._abort(running, reason):
            return reason
        return None

    def _observe(self, rollout: RolloutOut | None) -> None:
        for gauge in (
            self.metrics.rollout_readings,
            self.metrics.rollout_labeled,
            self.metrics.rollout_correct,
            self.metrics.rollout_failed,
        ):
            gauge.clear()  # a version of an ended rollout is not shown as if it ran
        if rollout is None:
            self.metrics.rollout_running.set(0)
            self.metrics.rollout_percent.set(0)
            return
        self.metrics.rollout_running.set(1)
        self.metrics.rollout_percent.set(0 if rollout.mode == "shadow" else rollout.percent)
        for v in rollout.versions:
            labels = {"model_version": str(v.version), "role": v.role}
            self.metrics.rollout_readings.labels(**labels).set(v.readings)
            self.metrics.rollout_labeled.labels(**labels).set(v.labeled)
            self.metrics.rollout_correct.labels(**labels).set(v.correct)
            self.metrics.rollout_failed.labels(**labels).set(v.failed)

    async def _abort(self, running: Rollout, reason: str) -> bool:
        # The tables can lag the ledger (history catching up, a replay): abort only a rollout
        # the ledger itself says is running, or every check would add an abort nobody applies.
        now = fold(await read_ledger_entries(self.kafka)).rollout
        if now is None or now.rollout_id != running.rollout_id:
            log.info("a guardrail objection to a rollout that has ended", reason=reason)
            return False
        step = now.step("aborted", by=GUARDRAIL, reason=reason)
        await publish_ledger(self.kafka, step, step.candidate.name)
        self.metrics.rollout_aborts.inc()
        log.warning(
            "rollout aborted by a guardrail",
            rollout_id=str(running.rollout_id),
            candidate=running.started.candidate.version,
            reason=reason,
        )
        return True
