"""The quality gate of `mnistream promote`: a worse candidate is refused with the numbers."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

from mnistream_cli.datasets import split_of
from mnistream_cli.labels import LabelComparison, compare
from mnistream_cli.promotion import FlipRule, GateReport, gate, judged_labels
from mnistream_cli.registry import RegisteredVersion
from mnistream_common.history_api import LabeledOut


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


def flipped(broken: int, right: int, fixed: int = 0) -> GateReport:
    return GateReport(
        version(3, 0.99),
        version(2, 0.98),
        labeled=right + 20,
        candidate_label_accuracy=0.9,
        champion_label_accuracy=0.9,
        champion_right=right,
        negative_flips=broken,
        positive_flips=fixed,
    )


def test_a_candidate_misreading_too_many_drawings_the_champion_reads_right_is_refused() -> None:
    # Better on the whole (it fixes 30) but it breaks 7 of the 120 the champion got right.
    report = gate(flipped(broken=7, right=120, fixed=30), FlipRule(max_share=0.05, min_labels=50))

    assert report.objections == [
        "it misreads 7 of the 120 user-labeled drawings the champion (v2) reads right "
        "(5.8%, more than 5.0%)"
    ]


def test_negative_flips_within_the_share_pass() -> None:
    report = gate(flipped(broken=6, right=120), FlipRule(max_share=0.05, min_labels=50))

    assert report.objections == [] and report.notes == []


def test_negative_flips_are_not_judged_on_too_few_labels_and_the_report_says_so() -> None:
    report = gate(flipped(broken=5, right=20), FlipRule(max_share=0.05, min_labels=50))

    assert report.objections == []
    assert report.notes == [
        "negative flips not judged: the champion reads 20 labeled drawings right, fewer than "
        "the 50 a share needs"
    ]


def test_the_comparison_counts_each_labeled_drawing_once() -> None:
    ids = [uuid.UUID(int=n) for n in range(5)]
    labeled = [LabeledOut(digit_id=d, label=7) for d in ids]
    # d0 both right, d1 only the champion (broken), d2 only the candidate (fixed), d3 neither,
    # d4 unreadable by the candidate (counts as misread by it).
    candidate = {ids[0]: 7, ids[1]: 1, ids[2]: 7, ids[3]: 2}
    champion = {ids[0]: 7, ids[1]: 7, ids[2]: 3, ids[3]: 2, ids[4]: 7}

    compared = compare(labeled, candidate, champion)

    assert compared == LabelComparison(
        labeled=5, candidate_right=2, champion_right=3, broken=2, fixed=1
    )
    assert (compared.candidate_accuracy, compared.champion_accuracy) == (0.4, 0.6)


def test_a_version_that_learnt_from_labels_is_judged_on_the_held_out_ones_only() -> None:
    labeled = [LabeledOut(digit_id=uuid.uuid4(), label=n % 10) for n in range(500)]
    plain = GateReport(candidate=version(3, 0.99), champion=version(2, 0.98))
    assert judged_labels(plain, labeled) == labeled and not plain.notes

    learnt = dataclasses.replace(version(3, 0.99), tags={"dataset_version": "ab" * 32})
    report = GateReport(candidate=learnt, champion=version(2, 0.98))
    held = judged_labels(report, labeled)
    assert held == [item for item in labeled if split_of(item.digit_id) == "heldout"]
    assert 50 < len(held) < 150  # about one in five
    assert report.notes == [
        f"v3 learnt from user labels: judged on the {len(held)} held-out labeled drawings of 500"
    ]
