"""A batch of `digits.submitted` records splits into good submissions and poison, losing none."""

from __future__ import annotations

import json

from inference_worker.handlers import parse_records

from tests.helpers import records, submitted


def test_good_and_poison_records_are_split_and_none_is_lost() -> None:
    good = [submitted(), submitted()]
    foreign = json.loads(good[0].to_bytes())
    foreign["schema_version"] = 99
    batch = records(
        [
            good[0].to_bytes(),
            b"\xff\xfe not json",
            None,
            good[1].to_bytes(),
            json.dumps(foreign).encode(),
            b'{"digit_id": "not-a-uuid"}',
        ]
    )

    submissions, poison = parse_records(batch)

    assert [s.event for s in submissions] == good
    assert [s.record.offset for s in submissions] == [0, 3]
    assert [record.offset for record, _ in poison] == [1, 2, 4, 5]
    assert len(submissions) + len(poison) == len(batch)
    for _, reason in poison:
        assert reason.startswith("not a valid DigitSubmitted: ")
    reasons = dict((record.offset, reason) for record, reason in poison)
    assert "schema_version" in reasons[4]
    assert "digit_id" in reasons[5]


def test_an_all_good_batch_has_no_poison() -> None:
    events = [submitted() for _ in range(5)]

    submissions, poison = parse_records(records([e.to_bytes() for e in events]))

    assert [s.event.digit_id for s in submissions] == [e.digit_id for e in events]
    assert poison == []


def test_an_empty_batch() -> None:
    assert parse_records([]) == ([], [])
