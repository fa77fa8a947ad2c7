"""The figures' arithmetic without a database: what a write changes (`figures.change`, which
visits only the readings that changed) equals a full recount of the drawings before and after
it, and a new version of a drawing read by many costs a line of pairs, not a square of them."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from typing import Any

from history_service import figures
from history_service.figures import Change, Comparisons, Drawing, Reading


def recount(drawings: dict[uuid.UUID, Drawing], compared: Comparisons) -> dict[str, Counter[Any]]:
    """Every figure of the drawings, counted from scratch (every pair of every drawing)."""
    total: dict[str, Counter[Any]] = {
        name: Counter() for name in ("counts", "micros", "labeled", "correct", "pairs", "flips")
    }
    for digit_id, drawing in drawings.items():
        for v, r in drawing.readings.items():
            total["counts"][v, r.kind] += 1
            total["micros"][v, r.kind] += r.micros
            if drawing.label is not None:
                total["labeled"][v] += 1
                total["correct"][v] += int(r.digit == drawing.label)
            for o, other in drawing.readings.items():
                if o == v:
                    continue
                total["pairs"][v, o, other.digit, r.digit] += 1
                if (v, o) in compared and other.digit != r.digit:
                    total["flips"][v, o, digit_id, other.digit, r.digit] += 1
    return total


def random_drawing(rng: random.Random, versions: int) -> Drawing:
    readings = {
        v: Reading(v, rng.choice([1, 7, 9]), rng.choice(["live", "rescore"]), rng.choice([5, 9]))
        for v in range(1, versions + 1)
        if rng.random() < 0.7
    }
    return Drawing(readings, rng.choice([None, 1, 7]))


def rewritten(rng: random.Random, drawing: Drawing, versions: int) -> Drawing:
    """The drawing after a write: some readings added or replaced, maybe a new label."""
    readings = dict(drawing.readings)
    for v in rng.sample(range(1, versions + 1), rng.randint(0, 2)):
        readings[v] = Reading(v, rng.choice([1, 7, 9]), "rescore", rng.choice([5, 9]))
    label = rng.choice([None, 1, 7]) if rng.random() < 0.3 else drawing.label
    return Drawing(readings, label)


def test_a_change_is_the_difference_of_two_full_recounts() -> None:
    rng = random.Random(11)
    compared: Comparisons = frozenset({(2, 1), (3, 2), (1, 3), (5, 4)})
    for _ in range(300):
        before = {uuid.UUID(int=i): random_drawing(rng, 5) for i in range(rng.randint(0, 4))}
        after = {d: rewritten(rng, drawing, 5) for d, drawing in before.items()}
        after[uuid.uuid4()] = random_drawing(rng, 5)  # a drawing with no rows before
        delta = figures.change(before, after, compared)

        was, now = recount(before, compared), recount(after, compared)
        for name in ("counts", "micros", "labeled", "correct", "pairs"):
            expected = {k: now[name][k] - was[name][k] for k in now[name].keys() | was[name]}
            assert figures.nonzero(getattr(delta, name)) == figures.nonzero(Counter(expected))
        flips_after = {(v, o, d): (f, t) for v, o, d, f, t in now["flips"]}
        flips_before = {(v, o, d): (f, t) for v, o, d, f, t in was["flips"]}
        expected_flips = {
            key: flips_after.get(key)
            for key in flips_after.keys() | flips_before.keys()
            if flips_after.get(key) != flips_before.get(key)
        }
        assert delta.flips == expected_flips


def test_one_more_version_of_a_drawing_costs_a_line_of_pairs() -> None:
    """A drawing read by 13 versions gets a 14th: 26 pair figures change (14 with each of the
    13, both ways), and the one flip of the comparison it is promoted in."""
    digit_id = uuid.uuid4()
    readings = {v: Reading(v, v % 10, "rescore", 1) for v in range(1, 14)}
    before = Drawing(readings, None)
    after = Drawing({**readings, 14: Reading(14, 5, "rescore", 1)}, None)
    delta: Change = figures.change({digit_id: before}, {digit_id: after}, frozenset({(14, 13)}))

    assert len(figures.nonzero(delta.pairs)) == 26
    assert all(14 in key[:2] for key in delta.pairs)
    assert delta.flips == {(14, 13, digit_id): (3, 5)}
