"""Accuracy on the drawings people labeled, computed with the models themselves."""

from __future__ import annotations

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


async def label_accuracy(
    store: ObjectStore,
    bucket: str,
    history: HistoryClient,
    version: RegisteredVersion,
    labeled: list[LabeledOut],
) -> float:
    """Share of labeled drawings that `version` reads as their label (the model from object
    storage's `bucket`, the drawings' model inputs from history-service)."""
    # The version was read from the registry: no need to ask it again.
    model = await fetch_and_build(
        store, version.ref, version.onnx_uri, RuntimeOptions(), bucket, registry=None
    )
    truth = {item.digit_id: item.label for item in labeled}
    hits = 0
    ids = list(truth)
    for start in range(0, len(ids), INPUT_PAGE):
        found = await history.model_inputs(ids[start : start + INPUT_PAGE])
        result = score_inputs(model, [(i.digit_id, i.model_input) for i in found.inputs])
        hits += sum(int(np.argmax(s.probabilities)) == truth[s.item] for s in result.scored)
    return hits / len(labeled) if labeled else 0.0
