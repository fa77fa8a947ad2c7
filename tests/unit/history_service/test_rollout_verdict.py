"""The rollout verdict's statistics: Wilson intervals per version, Newcombe's interval of the
difference, and the plain words people read."""

from __future__ import annotations

import pytest
from history_service.guardrails import Rules, objection
from history_service.rollouts import (
    Z95,
    Z99,
    Evidence,
    difference_interval,
    judge,
    wilson,
    with_failures,
)
from mnistream_common.history_api import RolloutOut, VersionFigures


def figures(role: str, correct: int, labeled: int, **extra: float) -> VersionFigures:
    bounds = wilson(correct, labeled)
    if bounds is not None:
        extra = {"accuracy_low": bounds[0], "accuracy_high": bounds[1], **extra}
    readings = max(labeled, int(extra.pop("readings", labeled)))
    return VersionFigures.model_validate(
        {
            "version": 1 if role == "champion" else 2,
            "role": role,
            "readings": readings,
            "labeled": labeled,
            "correct": correct,
            "accuracy": correct / labeled if labeled else None,
            **extra,
        }
    )


def test_wilson_matches_a_published_value() -> None:
    # Newcombe (1998), example: 81 of 263 → 0.2553 to 0.3662 at 95 %.
    bounds = wilson(81, 263, Z95)
    assert bounds is not None
    assert bounds == pytest.approx((0.2553, 0.3662), abs=5e-4)


def test_wilson_keeps_a_width_at_all_or_nothing() -> None:
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=5e-4)
    assert wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=5e-4)
    assert wilson(0, 0) is None


def test_the_difference_interval_matches_newcombes_method_10() -> None:
    # Newcombe (1998), table II example (a): 56/70 - 48/80 = 0.2, 95 % CI 0.0524 to 0.3339.
    candidate, champion = figures("candidate", 56, 70), figures("champion", 48, 80)
    interval = difference_interval(champion, candidate, Z95)
    assert interval == pytest.approx((0.2, 0.0524, 0.3339), abs=5e-4)


def test_too_few_labels_is_undecided_whatever_the_accuracies() -> None:
    verdict = judge(figures("champion", 40, 40), figures("candidate", 0, 29), Evidence(30))
    assert verdict["judged"] == "undecided"
    assert verdict["verdict"] == (
        "not enough labelled drawings yet (candidate 29, champion 40; 30 each are needed)"
    )


@pytest.mark.parametrize(
    ("candidate", "champion", "judged", "words"),
    [
        ((970, 1000), (930, 1000), "ahead", "candidate ahead: 97.0 % ± 1.1 vs 93.0 % ± 1.6"),
        ((930, 1000), (970, 1000), "behind", "candidate behind: 93.0 % ± 1.6 vs 97.0 % ± 1.1"),
        (
            (95, 100),
            (94, 100),
            "level",
            "no significant difference yet: 95.0 % ± 4.5 vs 94.0 % ± 4.8",
        ),
    ],
)
def test_the_verdict_says_who_is_ahead_only_when_the_interval_excludes_zero(
    candidate: tuple[int, int], champion: tuple[int, int], judged: str, words: str
) -> None:
    one, zero = figures("candidate", *candidate), figures("champion", *champion)
    verdict = judge(zero, one, Evidence(30))
    assert verdict["judged"] == judged
    assert verdict["verdict"].startswith(words)


def rollout_with(
    candidate: VersionFigures, judged: str = "level", champion: VersionFigures | None = None
) -> RolloutOut:
    return RolloutOut.model_validate(
        {
            "rollout_id": "2c6d4e7f-8a9b-4c0d-9e1f-2a3b4c5d6e7f",
            "mode": "canary",
            "candidate_version": 2,
            "champion_version": 1,
            "percent": 20,
            "started_at": "2026-03-01T12:00:00Z",
            "started_by": "ada",
            "reason": "",
            "state": "running",
            "ended_at": None,
            "ended_by": None,
            "end_reason": None,
            "versions": [
                (champion or figures("champion", 0, 0)).model_dump(),
                candidate.model_dump(),
            ],
            "compared": 0,
            "agreement": None,
            "verdict": "v",
            "judged": judged,
        }
    )


def test_a_guardrail_objects_to_a_candidate_significantly_behind() -> None:
    reason = objection(rollout_with(figures("candidate", 1, 50), "behind"), Rules())
    assert reason is not None and reason.startswith("the candidate is significantly worse")


def test_a_guardrail_objects_to_a_slow_candidate_only_over_enough_readings() -> None:
    slow = figures("candidate", 0, 0, readings=100, latency_p99_ms=1500.0)
    few = figures("candidate", 0, 0, readings=99, latency_p99_ms=1500.0)
    fast = figures("candidate", 0, 0, readings=500, latency_p99_ms=900.0)
    assert "p99 latency 1500 ms over 100 readings" in (objection(rollout_with(slow), Rules()) or "")
    assert objection(rollout_with(few), Rules()) is None
    assert objection(rollout_with(fast), Rules()) is None


def test_guardrails_judge_at_99_percent() -> None:
    # 85/100 against 95/100 is "behind" at 95 % but not at 99 %.
    one, zero = figures("candidate", 85, 100), figures("champion", 95, 100)
    low95 = difference_interval(zero, one, Z95)
    low99 = difference_interval(zero, one, Z99)
    assert low95 is not None and low99 is not None
    assert low95[2] < 0 < low99[2]


def test_a_shadow_candidates_latency_is_not_judged() -> None:
    slow = figures("candidate", 0, 0, readings=500, latency_p99_ms=5000.0)
    shadow = rollout_with(slow).model_copy(update={"mode": "shadow"})
    assert objection(shadow, Rules()) is None


@pytest.mark.parametrize("mode", ["canary", "shadow"])
@pytest.mark.parametrize(
    ("read", "failed", "aborted"),
    [
        (0, 8, True),  # fails on everything: out after a few drawings
        (970, 30, True),  # 3 %: the 99 % interval starts above 1 %
        (990, 10, False),  # 1 %: at the bound, not significantly over it
        (97, 3, False),  # 3 %, but over too few drawings to be sure it is over 1 %
        (500, 0, False),
    ],
)
def test_a_guardrail_objects_to_a_candidate_failing_significantly_over_the_bound(
    mode: str, read: int, failed: int, aborted: bool
) -> None:
    candidate = with_failures(figures("candidate", 0, 0, readings=read), failed, Z99)
    reason = objection(rollout_with(candidate).model_copy(update={"mode": mode}), Rules())
    if aborted:
        assert reason is not None
        assert f"failed on {failed} of the {read + failed} drawings" in reason
    else:
        assert reason is None


def test_a_versions_failure_rate_is_of_the_drawings_it_was_given() -> None:
    figured = with_failures(figures("candidate", 0, 0, readings=90), 10, Z95)
    assert (figured.failed, figured.failure_rate) == (10, 0.1)
    assert figured.failure_low is not None and figured.failure_high is not None
    assert figured.failure_low < 0.1 < figured.failure_high
    assert with_failures(figures("candidate", 0, 0), 0, Z95).failure_rate is None


def test_a_slow_candidate_is_judged_against_the_champion_over_the_same_time() -> None:
    """A worker killed during a canary delays both shares (the same workers read them): the
    candidate's p99 over the bound ends the rollout only when it is also well above the
    champion's. A chaos run saw the guardrail abort a canary at 9.5 s p99 after a kill -9."""
    slow = figures("candidate", 0, 0, readings=300, latency_p99_ms=9500.0)
    also_slow = figures("champion", 0, 0, readings=700, latency_p99_ms=9000.0)
    fast = figures("champion", 0, 0, readings=700, latency_p99_ms=40.0)
    assert objection(rollout_with(slow, champion=also_slow), Rules()) is None
    reason = objection(rollout_with(slow, champion=fast), Rules())
    assert reason is not None and "237.5× the champion's (40 ms)" in reason
