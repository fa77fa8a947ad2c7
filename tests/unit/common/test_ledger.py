"""The ledger fold every reader runs: one champion, at most one rollout, and the same answer for
every reader at every offset, whatever records a race or a forger adds."""

from __future__ import annotations

import uuid

import pytest
from mnistream_common.events import LedgerEntry, ModelPromoted, ModelRollout, RolloutMode
from mnistream_common.ledger import LedgerState, fold

from tests.helpers import promotion, tiny_onnx_model

MODELS = {v: tiny_onnx_model(200 + v) for v in range(1, 5)}


def promoted(version: int) -> ModelPromoted:
    return promotion(MODELS[version], version)


def step(
    version: int,
    action: str = "started",
    *,
    rollout_id: uuid.UUID | None = None,
    mode: RolloutMode = "canary",
    percent: float = 20.0,
) -> ModelRollout:
    model = promoted(version)
    return ModelRollout(
        rollout_id=rollout_id or uuid.uuid4(),
        action=action,  # type: ignore[arg-type]
        mode=mode,
        candidate=model.model,
        onnx_uri=model.onnx_uri,
        architecture="linear",
        champion_version=1,
        percent=100.0 if mode == "shadow" else percent,
        requested_by="tests@localhost",
    )


def test_a_promotion_makes_the_champion_and_a_start_opens_a_rollout() -> None:
    start = step(2)
    state = fold(enumerate([promoted(1), start]))
    assert state.champion is not None and state.champion.model.version == 1
    assert state.rollout is not None
    assert (state.rollout.rollout_id, state.rollout.percent) == (start.rollout_id, 20.0)


def test_a_change_sets_the_share_and_an_abort_ends_the_rollout() -> None:
    start = step(2)
    changed = step(2, "changed", rollout_id=start.rollout_id, percent=50.0)
    state = fold(enumerate([promoted(1), start, changed]))
    assert state.rollout is not None and state.rollout.percent == 50.0
    state.apply(step(2, "aborted", rollout_id=start.rollout_id), 3)
    assert state.rollout is None
    assert [(e.outcome, e.offset) for e in state.ended] == [("aborted", 3)]


def test_promoting_the_candidate_completes_the_rollout_and_another_supersedes_it() -> None:
    completed = fold(enumerate([promoted(1), step(2), promoted(2)]))
    superseded = fold(enumerate([promoted(1), step(2), promoted(3)]))
    assert [e.outcome for e in completed.ended] == ["completed"]
    assert [e.outcome for e in superseded.ended] == ["superseded"]
    assert completed.rollout is None and superseded.rollout is None


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        ([], "no champion to roll out beside"),
        ([promoted(1)], "v1 is the champion"),
        ([promoted(1), step(2)], "is running"),
    ],
    ids=["no champion", "the champion itself", "a second rollout"],
)
def test_a_start_that_does_not_apply_is_ignored(entries: list[LedgerEntry], why: str) -> None:
    state = fold(enumerate(entries))
    before = state.rollout
    candidate = 1 if why.startswith("v1") else 3
    assert why in (state.apply(step(candidate), len(entries)) or "")
    assert state.rollout == before


def test_a_step_of_a_rollout_that_is_not_running_is_ignored() -> None:
    start = step(2)
    state = fold(enumerate([promoted(1), start, step(2, "aborted", rollout_id=start.rollout_id)]))
    for late in (
        step(2, "changed", rollout_id=start.rollout_id, percent=90.0),
        step(2, "aborted", rollout_id=start.rollout_id),
        step(2, "changed", percent=90.0),
    ):
        assert "is not running" in (state.apply(late, 9) or "")
    assert state.rollout is None and len(state.ended) == 1


def test_a_shadow_rollout_has_no_share_to_change() -> None:
    start = step(2, mode="shadow")
    state = fold(enumerate([promoted(1), start]))
    why = state.apply(step(2, "changed", rollout_id=start.rollout_id, percent=50.0), 2)
    assert why == "a shadow rollout has no share to change"


def test_routing_is_deterministic_per_drawing_and_close_to_the_share() -> None:
    state = fold(enumerate([promoted(1), step(2, percent=20.0)]))
    rollout = state.rollout
    assert rollout is not None
    ids = [uuid.UUID(int=i * 7919 + 13) for i in range(20_000)]  # not random: hashed anyway
    routed = [rollout.candidate_answers(i) for i in ids]
    assert routed == [rollout.candidate_answers(i) for i in ids]
    # 20,000 draws at p = 0.2: the binomial 99.9 % bounds are about ±1 point.
    assert 0.19 < sum(routed) / len(ids) < 0.21


def test_a_larger_share_keeps_every_drawing_the_smaller_share_gave_the_candidate() -> None:
    start = step(2, percent=10.0)
    state = LedgerState()
    state.apply(promoted(1), 0)
    state.apply(start, 1)
    assert state.rollout is not None
    small = state.rollout
    state.apply(step(2, "changed", rollout_id=start.rollout_id, percent=40.0), 2)
    assert state.rollout is not None
    large = state.rollout
    ids = [uuid.uuid4() for _ in range(5_000)]
    assert all(large.candidate_answers(i) for i in ids if small.candidate_answers(i))


def test_a_shadow_rollout_answers_nothing() -> None:
    state = fold(enumerate([promoted(1), step(2, mode="shadow")]))
    assert state.rollout is not None
    assert not any(state.rollout.candidate_answers(uuid.uuid4()) for _ in range(1000))
