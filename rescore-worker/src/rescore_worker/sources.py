"""Where a rescore gets its images: object storage, many requests at a time."""

from __future__ import annotations

import asyncio
import uuid

from minio.error import S3Error
from mnistream_common.storage import ObjectStore, S3Uri, drawing_key


async def fetch_images(
    store: ObjectStore, bucket: str, digit_ids: list[uuid.UUID], concurrency: int
) -> tuple[list[tuple[uuid.UUID, bytes]], list[uuid.UUID]]:
    """The original image of each drawing, fetched `concurrency` at a time; and ids without one.

    Storage outages raise (the chunk is redone later); only a missing object is skipped.
    """
    gate = asyncio.Semaphore(concurrency)

    async def one(digit_id: uuid.UUID) -> tuple[uuid.UUID, bytes | None]:
        async with gate:
            try:
                return digit_id, await store.get(S3Uri(bucket, drawing_key(digit_id)))
            except S3Error as exc:
                if exc.code == "NoSuchKey":
                    return digit_id, None
                raise

    fetched = await asyncio.gather(*(one(d) for d in digit_ids))
    found = [(d, image) for d, image in fetched if image is not None]
    return found, [d for d, image in fetched if image is None]
