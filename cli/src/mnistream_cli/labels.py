"""The drawings people labeled, read by the models themselves: accuracy and negative flips."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
from mnistream_common.history_api import LabeledOut
from mnistream_common.history_client import HistoryClient
from mnistream_common.storage import ObjectStore
from mnistream_serving.batch import score_inputs
from mnistream_serving.loader import fetch_and_build
from mnistream_serving.model import RuntimeOptions

from mnistream_cli.registry import RegisteredVersion

# history-service answers up to 10,000 ids per request.
INPUT_PAGE = 10_000


class ModelRunError(RuntimeError):
    """A version loads but fails when it reads the labeled drawings."""


async def label_readings(
    store: ObjectStore,
    bucket: str,
    history: HistoryClient,
    version: RegisteredVersion,
    labeled: list[LabeledOut],
) -> dict[uuid.UUID, int]:
    """The digit `version` reads in each labeled drawing it can read (the model from object
    storage's `bucket`, the drawings' model inputs from history-service); a ModelRunError when
    the version fails on them."""
    # The version was read from the registry: no need to ask it again.
    model = await fetch_and_build(
        store, version.ref, version.onnx_uri, RuntimeOptions(), bucket, registry=None
    )
    ids = [item.digit_id for item in labeled]
    readings: dict[uuid.UUID, int] = {}
    for start in range(0, len(ids), INPUT_PAGE):
        found = await history.model_inputs(ids[start : start + INPUT_PAGE])
        try:
            result = score_inputs(model, [(i.digit_id, i.model_input) for i in found.inputs])
        except Exception as exc:  # onnxruntime raises untyped errors
            raise ModelRunError(
                f"v{version.version} fails on the labeled drawings: {str(exc)[:300]}"
            ) from exc
        readings.update({s.item: int(np.argmax(s.probabilities)) for s in result.scored})
    return readings


@dataclass(frozen=True)
class LabelComparison:
    """A candidate and the champion read on the same labeled drawings."""

    labeled: int
    candidate_right: int
    champion_right: int
    # Labeled drawings the champion reads right and the candidate misreads (negative flips),
    # and the other way round.
    broken: int
    fixed: int

    @property
    def candidate_accuracy(self) -> float:
        return self.candidate_right / self.labeled if self.labeled else 0.0

    @property
    def champion_accuracy(self) -> float:
        return self.champion_right / self.labeled if self.labeled else 0.0


def compare(
    labeled: list[LabeledOut], candidate: dict[uuid.UUID, int], champion: dict[uuid.UUID, int]
) -> LabelComparison:
    """Count, over every labeled drawing, what each version reads right and where they part (a
    drawing a version cannot read counts as misread by it)."""
    truth = {item.digit_id: item.label for item in labeled}
    new = {d for d, label in truth.items() if candidate.get(d) == label}
    old = {d for d, label in truth.items() if champion.get(d) == label}
    return LabelComparison(len(truth), len(new), len(old), len(old - new), len(new - old))
