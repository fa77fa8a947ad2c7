"""Object storage (MinIO or any S3): drawings and model artifacts."""

from __future__ import annotations

import asyncio
import hashlib
import io
import uuid
from dataclasses import dataclass
from urllib.parse import urlparse

from minio import Minio
from minio.commonconfig import SnowballObject
from minio.deleteobjects import DeleteObject
from minio.error import S3Error
from urllib3 import PoolManager, Retry, Timeout

from mnistream_common.settings import S3Settings


@dataclass(frozen=True)
class S3Uri:
    """A parsed `s3://bucket/key`."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        """Parse `s3://bucket/key`, with an error that shows the expected form."""
        parsed = urlparse(uri)
        key = parsed.path.lstrip("/")
        if parsed.scheme != "s3" or not parsed.netloc or not key:
            raise ValueError(f"{uri!r} is not an object URI of the form s3://bucket/key")
        return cls(parsed.netloc, key)


def drawing_key(digit_id: uuid.UUID) -> str:
    """Object key of a drawing's original image: its id (the media type is object metadata).

    Derived from the id alone, so a rescore worker can fetch images knowing only ids.
    """
    return str(digit_id)


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of some bytes."""
    return hashlib.sha256(data).hexdigest()


def make_minio(settings: S3Settings, *, max_connections: int = 32) -> Minio:
    """A MinIO client for the configured endpoint, failing fast instead of retrying for minutes."""
    endpoint = urlparse(settings.s3_endpoint_url)
    http = PoolManager(
        num_pools=4,
        maxsize=max_connections,
        timeout=Timeout(connect=3.0, read=30.0),
        retries=Retry(total=2, backoff_factor=0.1, status_forcelist=(500, 502, 503, 504)),
    )
    return Minio(
        endpoint.netloc,
        access_key=settings.s3_access_key_id,
        secret_key=settings.s3_secret_access_key.get_secret_value(),
        secure=endpoint.scheme == "https",
        region=settings.s3_region,
        http_client=http,
    )


class ObjectStore:
    """Async facade over the (blocking) MinIO client; calls run in worker threads."""

    def __init__(self, client: Minio) -> None:
        self._client = client
        self._snowball = True

    async def put(self, uri: S3Uri, data: bytes, content_type: str) -> None:
        """Store bytes under a key (overwriting is idempotent for the same bytes)."""
        await asyncio.to_thread(
            self._client.put_object,
            uri.bucket,
            uri.key,
            io.BytesIO(data),
            len(data),
            content_type=content_type,
        )

    async def put_many(self, bucket: str, objects: list[tuple[str, bytes]]) -> None:
        """Store many small objects in one request (MinIO's snowball upload: a tar the server
        extracts into the objects before it answers), or one request each where that is not
        supported (any other S3)."""
        if not objects:
            return
        if self._snowball:
            try:
                await asyncio.to_thread(self._snowball_put, bucket, objects)
                return
            except S3Error as exc:
                if exc.code not in ("NotImplemented", "InvalidArgument", "InvalidRequest"):
                    raise
                self._snowball = False  # not MinIO: one PUT per object from now on
        await asyncio.gather(
            *(
                self.put(S3Uri(bucket, key), data, "application/octet-stream")
                for key, data in objects
            )
        )

    def _snowball_put(self, bucket: str, objects: list[tuple[str, bytes]]) -> None:
        self._client.upload_snowball_objects(
            bucket,
            [SnowballObject(key, data=io.BytesIO(data), length=len(data)) for key, data in objects],
        )

    async def delete_many(self, bucket: str, keys: list[str]) -> None:
        """Delete objects (one request per thousand); a key already gone is no error, so an
        erasure retried after an outage finishes where it stopped."""
        if keys:
            await asyncio.to_thread(self._delete_sync, bucket, keys)

    def _delete_sync(self, bucket: str, keys: list[str]) -> None:
        errors = list(self._client.remove_objects(bucket, (DeleteObject(k) for k in keys)))
        if errors:
            raise RuntimeError(f"{len(errors)} objects in {bucket} not deleted: {errors[0]}")

    async def get(self, uri: S3Uri) -> bytes:
        """Read a whole object."""
        return await asyncio.to_thread(self._get_sync, uri)

    def _get_sync(self, uri: S3Uri) -> bytes:
        response = self._client.get_object(uri.bucket, uri.key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    async def exists(self, uri: S3Uri) -> bool:
        """Whether an object exists."""
        try:
            await asyncio.to_thread(self._client.stat_object, uri.bucket, uri.key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NoSuchBucket"):
                return False
            raise
        return True

    async def ping(self, bucket: str) -> bool:
        """Whether the store answers and the bucket exists (for readiness)."""
        try:
            return await asyncio.to_thread(self._client.bucket_exists, bucket)
        except Exception:  # any failure means "not ready", with no detail to act on here
            return False


def ensure_buckets(client: Minio, buckets: list[str]) -> list[str]:
    """Create the buckets that are missing; returns the ones created."""
    created = []
    for bucket in buckets:
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
            created.append(bucket)
    return created


def delete_all(client: Minio, bucket: str) -> int:
    """Delete every object in `bucket`; returns how many. Fails if any deletion fails."""
    names = [o.object_name for o in client.list_objects(bucket, recursive=True) if o.object_name]
    errors = list(client.remove_objects(bucket, (DeleteObject(n) for n in names)))
    if errors:
        raise RuntimeError(f"{len(errors)} objects in {bucket} not deleted: {errors[0]}")
    return len(names)
