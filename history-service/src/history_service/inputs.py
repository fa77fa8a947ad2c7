"""Model inputs for rescores: read from the drawings table in one query; a row without one (or
with one from an older preprocessing) gets it made from the original image, which is stored
back, so each drawing is preprocessed once per preprocessing version."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from minio.error import S3Error
from mnistream_common.history_api import ModelInputOut, ModelInputsOut, UnusableOut
from mnistream_common.preprocessing import PREPROCESSING_VERSION, PreprocessError, prepare
from mnistream_common.storage import ObjectStore, S3Uri
from sqlalchemy.ext.asyncio import AsyncEngine

from history_service import queries
from history_service.writer import HistoryWriter

FETCH_CONCURRENCY = 16


@dataclass(frozen=True)
class InputSource:
    """Where inputs come from: the table, and the originals behind it."""

    engine: AsyncEngine
    store: ObjectStore
    writer: HistoryWriter

    async def model_inputs(self, digit_ids: list[uuid.UUID]) -> ModelInputsOut:
        """The current-version input of each drawing; missing and unusable ones apart."""
        async with self.engine.connect() as conn:
            rows = await queries.stored_inputs(conn, digit_ids)
        inputs: list[ModelInputOut] = []
        stale: list[queries.StoredInput] = []
        for row in rows:
            if row.model_input is not None and row.preprocessing_version == PREPROCESSING_VERSION:
                inputs.append(
                    ModelInputOut(
                        digit_id=row.digit_id,
                        model_input=row.model_input,
                        preprocessing_version=PREPROCESSING_VERSION,
                    )
                )
            else:
                stale.append(row)
        derived, unusable = await self._derive(stale)
        inputs += derived
        found = {r.digit_id for r in rows}
        missing = [d for d in digit_ids if d not in found]
        return ModelInputsOut(inputs=inputs, missing=missing, unusable=unusable)

    async def _derive(
        self, rows: list[queries.StoredInput]
    ) -> tuple[list[ModelInputOut], list[UnusableOut]]:
        gate = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def one(row: queries.StoredInput) -> ModelInputOut | UnusableOut:
            async with gate:
                try:
                    image = await self.store.get(S3Uri(row.image_bucket, row.image_key))
                except S3Error as exc:
                    if exc.code != "NoSuchKey":
                        raise  # storage trouble: the caller retries later
                    return UnusableOut(digit_id=row.digit_id, reason="its image object is missing")
            try:
                model_input = (await asyncio.to_thread(prepare, image)).model_input
            except PreprocessError as exc:
                return UnusableOut(digit_id=row.digit_id, reason=f"its image cannot be read: {exc}")
            return ModelInputOut(
                digit_id=row.digit_id,
                model_input=model_input,
                preprocessing_version=PREPROCESSING_VERSION,
            )

        results = await asyncio.gather(*(one(r) for r in rows))
        derived = [r for r in results if isinstance(r, ModelInputOut)]
        await self.writer.model_inputs(
            [(r.digit_id, r.model_input, r.preprocessing_version) for r in derived]
        )
        return derived, [r for r in results if isinstance(r, UnusableOut)]
