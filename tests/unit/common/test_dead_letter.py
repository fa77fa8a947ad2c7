"""A dead letter keeps everything needed to find and replay the record it stands for."""

from __future__ import annotations

from mnistream_common.events import DeadLetter
from mnistream_common.kafka import MAX_DEAD_LETTER_ORIGINAL, build_dead_letter

ORIGINAL = b"\x00\xff{not json at all\x89PNG"


def test_a_dead_letter_keeps_where_the_record_was_and_its_exact_bytes() -> None:
    letter = build_dead_letter(
        topic="digits.submitted",
        partition=7,
        offset=1234,
        key=b"0195-key",
        value=ORIGINAL,
        error="not a valid DigitSubmitted: <root>: Invalid JSON",
        service="inference-worker",
    )

    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        "digits.submitted",
        7,
        1234,
    )
    assert letter.source_key == b"0195-key"
    assert letter.original == ORIGINAL
    assert letter.error == "not a valid DigitSubmitted: <root>: Invalid JSON"
    assert letter.service == "inference-worker"
    assert letter.failed_at.tzinfo is not None


def test_a_dead_letter_survives_the_trip_through_kafka() -> None:
    letter = build_dead_letter(
        topic="digits.predicted",
        partition=0,
        offset=0,
        key=None,
        value=ORIGINAL,
        error="boom",
        service="history-service",
    )

    again = DeadLetter.from_bytes(letter.to_bytes())

    assert again == letter
    assert again.original == ORIGINAL
    assert again.source_key is None


def test_a_long_error_is_cut_to_what_the_event_allows() -> None:
    letter = build_dead_letter(
        topic="digits.submitted",
        partition=0,
        offset=1,
        key=None,
        value=b"",
        error="x" * 10_000,
        service="inference-worker",
    )

    assert len(letter.error) == 4000
    assert DeadLetter.from_bytes(letter.to_bytes()).error == letter.error


def test_the_dead_letter_of_an_older_oversized_record_still_fits() -> None:
    value = b"x" * (3 * 1024 * 1024)  # what the broker allowed before the topic limits
    letter = build_dead_letter(
        topic="digits.predicted",
        partition=7,
        offset=42,
        key=b"k",
        value=value,
        error="not a valid DigitPredicted",
        service="history-service",
    )
    assert len(letter.to_bytes()) < 2 * 1024 * 1024  # digits.deadletter's limit
    assert letter.original == value[:MAX_DEAD_LETTER_ORIGINAL]
    assert "the whole record is at digits.predicted/7@42" in letter.error
