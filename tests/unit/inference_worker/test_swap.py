"""Which model a worker should hold: only the newest promotion, never a rejected one, once."""

from __future__ import annotations

import pytest
from inference_worker.swap import SwapDecision, Wanted, decide, refusal

from tests.helpers import model_ref, promotion, tiny_onnx_model

OLD = tiny_onnx_model(1)
NEW = tiny_onnx_model(2)


def wanted(onnx_bytes: bytes, offset: int, version: int = 2) -> Wanted:
    return Wanted(promotion(onnx_bytes, version), offset)


def test_nothing_promoted_yet_means_wait() -> None:
    assert decide(None, None, set(), 0) is SwapDecision.WAIT_FOR_LEDGER


@pytest.mark.parametrize(("offset", "end"), [(0, 5), (3, 5), (0, 2)])
def test_old_promotions_replayed_from_the_ledger_are_not_loaded(offset: int, end: int) -> None:
    assert decide(wanted(NEW, offset), None, set(), end) is SwapDecision.WAIT_FOR_LEDGER


@pytest.mark.parametrize(
    ("offset", "end"),
    [(4, 5), (0, 1), (0, 0), (7, 5)],
    ids=["last-at-start", "only-one", "empty-ledger-at-start", "promoted-while-running"],
)
def test_the_newest_promotion_is_loaded(offset: int, end: int) -> None:
    assert decide(wanted(NEW, offset), None, set(), end) is SwapDecision.LOAD


def test_a_newer_model_replaces_the_one_serving() -> None:
    serving = model_ref(OLD, 1)

    assert decide(wanted(NEW, 1), serving, set(), 1) is SwapDecision.LOAD


def test_the_model_already_serving_is_not_loaded_again() -> None:
    serving = model_ref(NEW, 2)

    assert decide(wanted(NEW, 3), serving, set(), 1) is SwapDecision.ALREADY_SERVING


def test_a_rollback_to_the_same_bytes_under_a_new_promotion_is_already_serving() -> None:
    serving = model_ref(OLD, 1)

    decision = decide(Wanted(promotion(OLD, 1, previous=2), 9), serving, set(), 3)

    assert decision is SwapDecision.ALREADY_SERVING


def test_a_model_rejected_before_is_not_tried_again() -> None:
    rejected = {refusal(wanted(NEW, 1).event)}

    decision = decide(wanted(NEW, 1), model_ref(OLD, 1), rejected, 1)

    assert decision is SwapDecision.PREVIOUSLY_REJECTED


def test_a_refusal_of_one_promotion_does_not_refuse_the_same_model_promoted_as_registered() -> None:
    """A forged promotion reusing a real model's sha256 under another version was refused: the
    real promotion of that model (its own version and object) is still loaded."""
    forged = Wanted(promotion(NEW, 9), 1)
    rejected = {refusal(forged.event)}

    assert decide(wanted(NEW, 2), model_ref(OLD, 1), rejected, 1) is SwapDecision.LOAD


def test_waiting_for_the_ledger_comes_before_every_other_check() -> None:
    serving = model_ref(NEW, 2)
    rejected = {refusal(wanted(NEW, 0).event)}

    assert decide(wanted(NEW, 0), serving, rejected, 10) is SwapDecision.WAIT_FOR_LEDGER
