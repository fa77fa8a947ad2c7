"""Drift signals: descriptors of model inputs, the reference, PSI; and the event carrying it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mnistream_common.drift import (
    SIGNALS,
    bin_counts,
    describe_inputs,
    describe_outputs,
    psi,
    reference_of,
    scores,
    signal_reference,
)
from mnistream_common.events import (
    DriftReference,
    InvalidEventError,
    LedgerRecords,
    ModelPromoted,
    ModelRef,
    SignalReference,
    utc_now,
)
from mnistream_common.preprocessing import prepare
from PIL import Image

from tests.helpers import FOUR, SEVEN, encode_ink, stroke_ink


def drawings(count: int, *, width: int, angle: float = 0.0, seed: int = 0) -> np.ndarray:
    """`count` canvas drawings of a 7 or a 4, jittered in place and size, as model inputs."""
    rng = np.random.default_rng(seed)
    inputs = []
    for index in range(count):
        ink = stroke_ink(
            SEVEN if index % 2 else FOUR,
            width=int(width * rng.uniform(0.8, 1.2)),
            offset=(rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1)),
            scale=rng.uniform(0.7, 1.0),
        )
        if angle:
            ink = np.asarray(Image.fromarray(ink).rotate(angle, resample=Image.Resampling.BILINEAR))
        inputs.append(np.frombuffer(prepare(encode_ink(ink, "rgba-dark")).model_input, np.uint8))
    return np.stack(inputs)


@pytest.fixture(scope="module")
def reference() -> DriftReference:
    inputs = drawings(600, width=20, seed=1)
    uniformish = np.full((len(inputs), 10), 0.02)
    uniformish[np.arange(len(inputs)), np.arange(len(inputs)) % 10] = 0.82
    return reference_of(inputs, uniformish, "strokes of width 20")


def input_scores(reference: DriftReference, inputs: np.ndarray) -> dict[str, float]:
    return scores(reference, describe_inputs(inputs))


def test_drawings_like_the_reference_stay_below_the_threshold(reference: DriftReference) -> None:
    found = input_scores(reference, drawings(400, width=20, seed=2))
    assert max(found.values()) < 0.2, found


def test_much_thicker_strokes_raise_thickness_and_ink(reference: DriftReference) -> None:
    found = input_scores(reference, drawings(400, width=45, seed=3))
    assert found["thickness"] > 1.0, found
    assert found["ink"] > 1.0, found


def test_rotated_drawings_raise_slant(reference: DriftReference) -> None:
    found = input_scores(reference, drawings(400, width=20, angle=35, seed=4))
    assert found["slant"] > 1.0, found


def test_the_descriptors_mean_what_they_say() -> None:
    square = np.zeros((1, 28, 28), dtype=np.uint8)
    square[0, 4:24, 9:19] = 255  # a 10 wide, 20 high bar of ink
    found = describe_inputs(square)
    assert found["ink"][0] == pytest.approx(200 / 784)
    assert found["mean"][0] == pytest.approx(200 / 784)
    assert found["aspect"][0] == pytest.approx(10 / 20)
    assert found["thickness"][0] == pytest.approx(2 * 200 / (2 * 20 + 2 * 8))
    assert found["slant"][0] == pytest.approx(0.0, abs=1e-9)
    sheared = np.zeros((1, 28, 28), dtype=np.uint8)
    for row in range(4, 24):  # leaning right towards the top, as a rotation left would
        sheared[0, row, 14 - (row - 14) // 2 : 16 - (row - 14) // 2] = 255
    assert describe_inputs(sheared)["slant"][0] < -0.3


def test_output_signals() -> None:
    uniform = np.full((1, 10), 0.1)
    sure = np.eye(10)[[3]]
    found = describe_outputs(np.vstack([uniform, sure]))
    assert found["confidence"].tolist() == pytest.approx([0.1, 1.0])
    assert found["entropy"].tolist() == pytest.approx([math.log(10), 0.0])
    assert found["digit"][1] == 3


def test_bins_split_at_their_cut_points() -> None:
    assert bin_counts([1.0, 2.0], np.array([0.5, 1.0, 1.5, 2.0, 2.5, 9.0])) == [2, 2, 2]


def test_a_reference_has_equal_bins_and_the_ten_classes() -> None:
    values = np.arange(1000, dtype=np.float64)
    found = signal_reference("ink", values)
    assert len(found.edges) == 9 and found.shares == pytest.approx([0.1] * 10)
    digits = signal_reference("digit", np.repeat(np.arange(10.0), [10, 0, 0, 0, 0, 0, 0, 0, 0, 90]))
    assert digits.edges == [c + 0.5 for c in range(9)]
    assert digits.shares[0] == pytest.approx(0.1) and digits.shares[9] == pytest.approx(0.9)
    tied = signal_reference("aspect", np.ones(100))  # all equal: one cut point, two bins
    assert len(tied.shares) == len(tied.edges) + 1


def test_psi_is_zero_on_the_reference_and_grows_with_the_shift() -> None:
    values = np.random.default_rng(0).normal(size=5000)
    ref = signal_reference("mean", values)
    assert psi(ref, values) == pytest.approx(0.0, abs=1e-9)
    shifted = [psi(ref, values + shift) for shift in (0.1, 0.5, 1.0)]
    assert shifted == sorted(shifted) and shifted[0] < 0.1 < 0.2 < shifted[2]
    assert math.isfinite(psi(ref, values + 100))  # every value in one bin: still a number


def test_reference_of_measures_every_signal(reference: DriftReference) -> None:
    assert set(reference.signals) == set(SIGNALS) and reference.drawings == 600
    for signal in reference.signals.values():
        assert sum(signal.shares) == pytest.approx(1.0)


def promoted(reference: DriftReference | None, version: int = 2) -> ModelPromoted:
    return ModelPromoted(
        schema_version=version,  # type: ignore[arg-type]
        model=ModelRef(name="mnist-digits", version=3, sha256="a" * 64),
        onnx_uri="s3://mlflow/1/run/artifacts/model/model.onnx",
        architecture="mlp",
        promoted_by="ada",
        promoted_at=utc_now(),
        drift_reference=reference,
    )


def test_the_promotion_carries_the_reference_through_the_ledger(
    reference: DriftReference,
) -> None:
    event = promoted(reference)
    raw = event.to_bytes()
    assert len(raw) < 8000  # a few kilobytes in the ledger per promotion
    assert LedgerRecords.from_bytes(raw) == event
    parsed = LedgerRecords.from_bytes(raw)
    assert isinstance(parsed, ModelPromoted) and parsed.drift_reference == reference


def test_a_v1_promotion_still_parses_and_carries_no_reference(reference: DriftReference) -> None:
    v1 = promoted(None, version=1).to_bytes()
    parsed = LedgerRecords.from_bytes(v1)
    assert isinstance(parsed, ModelPromoted) and parsed.drift_reference is None
    with pytest.raises(ValueError, match="version 1 carries no drift_reference"):
        promoted(reference, version=1)


def test_a_reference_with_mismatched_bins_is_refused() -> None:
    with pytest.raises(ValueError, match="one share per bin"):
        SignalReference(edges=[1.0, 2.0], shares=[0.5, 0.5])
    with pytest.raises(ValueError, match="ascending"):
        SignalReference(edges=[2.0, 1.0], shares=[0.3, 0.3, 0.4])
    raw = (
        promoted(None)
        .to_bytes()
        .replace(
            b'"drift_reference":null',
            b'"drift_reference":{"source":"x","drawings":1,"signals":{"ink":'
            b'{"edges":[1.0],"shares":[1.0]}}}',
        )
    )
    with pytest.raises(InvalidEventError):
        LedgerRecords.from_bytes(raw)
