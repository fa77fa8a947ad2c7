"""The quality gate of `mnistream promote`: a worse candidate is refused with the numbers."""

from __future__ import annotations

from datetime import UTC, datetime

from mnistream_cli.promotion import GateReport, gate
from mnistream_cli.registry import RegisteredVersion


def version(number: int, test_accuracy: float | None) -> RegisteredVersion:
    return RegisteredVersion(
        name="mnist-digits",
        version=number,
        architecture="cnn",
        test_accuracy=test_accuracy,
        sha256=f"{number:02x}" * 32,
        onnx_uri=f"s3://mlflow/models/v{number}.onnx",
        created_at=datetime(2026, 3, 1, tzinfo=UTC),
        aliases=(),
        tags={},
    )


def test_with_no_champion_there_is_nothing_to_object_to() -> None:
    report = gate(GateReport(version(1, 0.5), None))

    assert report.objections == []


def test_a_better_candidate_passes() -> None:
    report = gate(
        GateReport(
            version(3, 0.99),
            version(2, 0.97),
            labeled=40,
            candidate_label_accuracy=0.95,
            champion_label_accuracy=0.90,
        )
    )

    assert report.objections == []


def test_an_equal_candidate_passes() -> None:
    report = gate(GateReport(version(3, 0.97), version(2, 0.97)))

    assert report.objections == []


def test_worse_test_accuracy_is_refused_with_both_numbers() -> None:
    report = gate(GateReport(version(3, 0.9123), version(2, 0.9871)))

    assert report.objections == [
        "test accuracy 0.9123 is below the champion's (v2) 0.9871",
    ]


def test_worse_accuracy_on_user_labels_is_refused_with_the_count() -> None:
    report = gate(
        GateReport(
            version(3, 0.99),
            version(2, 0.98),
            labeled=25,
            candidate_label_accuracy=0.80,
            champion_label_accuracy=0.88,
        )
    )

    assert report.objections == [
        "accuracy on 25 user-labeled drawings 0.8000 is below the champion's 0.8800",
    ]


def test_promoting_the_champion_again_is_refused() -> None:
    report = gate(GateReport(version(2, 0.98), version(2, 0.98)))

    assert report.objections == ["version 2 is already the champion"]


def test_every_objection_is_listed() -> None:
    report = gate(
        GateReport(
            version(3, 0.90),
            version(2, 0.95),
            labeled=10,
            candidate_label_accuracy=0.5,
            champion_label_accuracy=0.6,
        )
    )

    assert len(report.objections) == 2


def test_unknown_accuracies_are_not_objections() -> None:
    report = gate(
        GateReport(
            version(3, None),
            version(2, 0.95),
            labeled=0,
            candidate_label_accuracy=None,
            champion_label_accuracy=0.9,
        )
    )

    assert report.objections == []
