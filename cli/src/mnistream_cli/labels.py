"""Accuracy on the drawings people labeled, computed with the models themselves."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import numpy as np
from mnistream_common.storage import ObjectStore, S3Uri, drawing_key
from mnistream_serving.batch import score_batch
from mnistream_serving.loader import fetch_and_build
from mnistream_serving.model import RuntimeOptions

from mnistream_cli.registry import RegisteredVersion


async def labeled_drawings(history_url: str) -> list[tuple[uuid.UUID, int]]:
    """(digit id, label) of every labeled drawing, from history-service."""
    async with httpx.AsyncClient(base_url=history_url, timeout=30.0) as client:
        response = await client.get("/internal/labeled")
        response.raise_for_status()
        return [(uuid.UUID(r["digit_id"]), int(r["label"])) for r in response.json()]


async def label_accuracy(
    store: ObjectStore,
    bucket: str,
    version: RegisteredVersion,
    labeled: list[tuple[uuid.UUID, int]],
) -> float:
    """Share of labeled drawings that `version` reads as their label."""
    model = await fetch_and_build(store, version.ref, version.onnx_uri, RuntimeOptions())
    images = await asyncio.gather(*(store.get(S3Uri(bucket, drawing_key(d))) for d, _ in labeled))
    truth = dict(labeled)
    result = score_batch(model, [(d, image) for (d, _), image in zip(labeled, images, strict=True)])
    hits = sum(int(np.argmax(s.probabilities)) == truth[s.item] for s in result.scored)
    return hits / len(labeled) if labeled else 0.0
