"""Fetching a model's ONNX from object storage and turning it into a `LoadedModel`."""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from minio.error import S3Error
from mnistream_common.events import ModelRef
from mnistream_common.storage import ObjectStore, S3Uri

from mnistream_serving.model import LoadedModel, ModelRejectedError, RuntimeOptions, build_model
from mnistream_serving.registry import ModelUnavailableError, RegistryCheck

__all__ = ["ModelCache", "ModelUnavailableError", "fetch_and_build"]


async def fetch_and_build(
    store: ObjectStore,
    ref: ModelRef,
    onnx_uri: str,
    options: RuntimeOptions,
    bucket: str,
    registry: RegistryCheck | None,
) -> LoadedModel:
    """Check with the registry, download, verify (sha256), build and warm a model; the build
    runs off the event loop.

    Models are only read from `bucket` (ARTIFACTS_BUCKET, where MLflow keeps them): a
    promotion pointing anywhere else, the drawings bucket say, is refused. With a `registry`,
    a version it does not hold with this URI and sha256 is refused before any read (None: the
    caller read the version from the registry itself, as the CLI does).
    """
    try:
        uri = S3Uri.parse(onnx_uri)
    except ValueError as exc:
        raise ModelRejectedError(str(exc)) from exc
    if uri.bucket != bucket:
        raise ModelRejectedError(
            f"{onnx_uri} is outside the artifacts bucket {bucket!r}; models are read only there"
        )
    if registry is not None:
        await registry.verify(ref, onnx_uri)
    try:
        onnx_bytes = await store.get(uri)
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchBucket", "AccessDenied"):
            raise ModelRejectedError(f"cannot read {onnx_uri}: {exc.code}") from exc
        raise ModelUnavailableError(f"object storage error for {onnx_uri}: {exc}") from exc
    except Exception as exc:  # connection refused, timeouts: storage is down, try later
        raise ModelUnavailableError(f"cannot reach object storage for {onnx_uri}: {exc}") from exc
    return await asyncio.to_thread(build_model, ref, onnx_bytes, options)


class ModelCache:
    """The few most recently used models, so rescore chunks reuse one session."""

    def __init__(
        self,
        store: ObjectStore,
        options: RuntimeOptions,
        bucket: str,
        registry: RegistryCheck | None,
        capacity: int = 2,
    ) -> None:
        self._store = store
        self._registry = registry
        self._options = options
        self._bucket = bucket
        self._capacity = capacity
        self._models: OrderedDict[tuple[str, int, str, str], LoadedModel] = OrderedDict()
        self._lock = asyncio.Lock()

    async def get(self, ref: ModelRef, onnx_uri: str) -> LoadedModel:
        """The model for `ref`, loading it once."""
        # Keyed by all the registry vouched for: a task naming another version (or object)
        # with a cached model's sha256 is checked with the registry again, not served.
        key = (ref.name, ref.version, ref.sha256, onnx_uri)
        async with self._lock:
            model = self._models.get(key)
            if model is None:
                model = await fetch_and_build(
                    self._store, ref, onnx_uri, self._options, self._bucket, self._registry
                )
                self._models[key] = model
                while len(self._models) > self._capacity:
                    self._models.popitem(last=False)
            self._models.move_to_end(key)
            return model
