"""The object store as the worker uses it: a minio client whose blocking calls run in a thread pool.

The minio client is thread-safe; every call here runs on the worker's I/O pool, so the event loop
never waits on the network. Its HTTP pool has short connect timeouts and few retries of its own:
back-off is the failure policy's job (:mod:`processor.failures`), not a thread's.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TypeVar

import urllib3
from minio.error import S3Error

from photoenhance.s3 import minio_client
from photoenhance.settings import Settings
from processor.failures import PermanentFailure

__all__ = ["Listed", "Storage", "StoredObject"]

T = TypeVar("T")

#: Prefix of user metadata in S3 headers.
META_PREFIX = "x-amz-meta-"


@dataclass(frozen=True)
class StoredObject:
    """An object's bytes and what its headers said."""

    data: bytes
    etag: str
    content_type: str | None
    #: User metadata, names lower-cased, without the ``x-amz-meta-`` prefix.
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Listed:
    """One entry of a prefix listing."""

    key: str
    etag: str
    size: int
    last_modified: datetime | None


class Storage:
    """Async wrappers around a minio client, each call on ``executor``."""

    def __init__(self, settings: Settings, executor: Executor) -> None:
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5, read=60),
            maxsize=max(settings.processor_io_threads, 4),
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        self.client = minio_client(settings, http_client=http)
        self._executor = executor

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def get(self, bucket: str, key: str, *, etag: str | None, max_bytes: int) -> StoredObject:
        """The object's bytes; with ``etag``, only that version (else ``PreconditionFailed``).

        Objects larger than ``max_bytes`` are refused from their headers, before the body is read.
        """
        return await self._run(partial(self._get, bucket, key, etag, max_bytes))

    def _get(self, bucket: str, key: str, etag: str | None, max_bytes: int) -> StoredObject:
        headers = {"If-Match": f'"{etag}"'} if etag else None
        response = self.client.get_object(bucket, key, request_headers=headers)
        try:
            length = int(response.headers.get("content-length") or 0)
            if length > max_bytes:
                raise PermanentFailure(
                    "too_large", f"the object is {length} bytes, more than the limit of {max_bytes} bytes"
                )
            data = response.read(decode_content=False)
            return StoredObject(
                data=data,
                etag=(response.headers.get("etag") or "").strip('"'),
                content_type=response.headers.get("content-type"),
                metadata={
                    name.lower()[len(META_PREFIX):]: value
                    for name, value in response.headers.items()
                    if name.lower().startswith(META_PREFIX)
                },
            )
        finally:
            response.close()
            response.release_conn()

    async def get_if_exists(self, bucket: str, key: str, *, max_bytes: int) -> bytes | None:
        """The object's bytes, or None when there is no such object."""
        try:
            return (await self.get(bucket, key, etag=None, max_bytes=max_bytes)).data
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                return None
            raise

    async def put(
        self, bucket: str, key: str, data: bytes, *, content_type: str, metadata: dict[str, str]
    ) -> str:
        """Store ``data``; returns once the store has it (the write is durable), with its eTag."""
        result = await self._run(
            partial(
                self.client.put_object,
                bucket,
                key,
                io.BytesIO(data),
                len(data),
                content_type=content_type,
                metadata={f"{META_PREFIX}{name}": value for name, value in metadata.items()},
            )
        )
        return (result.etag or "").strip('"')

    async def list_prefix(self, bucket: str, prefix: str) -> list[Listed]:
        """Every object under ``prefix`` (recursively)."""
        return await self._run(partial(self._list, bucket, prefix))

    def _list(self, bucket: str, prefix: str) -> list[Listed]:
        return [
            Listed(o.object_name, (o.etag or "").strip('"'), o.size or 0, o.last_modified)
            for o in self.client.list_objects(bucket, prefix=prefix, recursive=True)
            if o.object_name and not o.is_dir
        ]
