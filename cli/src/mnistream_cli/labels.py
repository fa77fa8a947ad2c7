"""Accuracy on the drawings people labeled, computed with the models themselves."""

from __future__ import annotations

import asyncio

import numpy as np
from mnistream_common.history_api import LabeledOut
from mnistream_common.storage import ObjectStore, S3Uri, drawing_key
from mnistream_serving.batch import score_batch
from mnistream_serving.loader import fetch_and_build
from mnistream_serving.model import RuntimeOptions

from mnistream_cli.registry import RegisteredVersion


async def label_accuracy(
    store: ObjectStore, bucket: str, version: RegisteredVersion, labeled: list[LabeledOut]
) -> float:
    """Share of labeled drawings that `version` reads as their label."""
    model = await fetch_and_build(store, version.ref, version.onnx_uri, RuntimeOptions())
    images = await asyncio.gather(
        *(store.get(S3Uri(bucket, drawing_key(item.digit_id))) for item in labeled)
    )
    truth = {item.digit_id: item.label for item in labeled}
    pairs = [(item.digit_id, image) for item, image in zip(labeled, images, strict=True)]
    result = score_batch(model, pairs)
    hits = sum(int(np.argmax(s.probabilities)) == truth[s.item] for s in result.scored)
    return hits / len(labeled) if labeled else 0.0
