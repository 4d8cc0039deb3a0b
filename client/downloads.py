"""Results from the object store into the output folder, whole or not at all.

A result is written to a hidden temporary file beside its final name and renamed into place
only once every byte has arrived, so an interrupted run never leaves a truncated photo that a
re-run would take for a finished one. Network failures are retried with back-off; an expired
or refused link is reported as :class:`LinkExpired`, so the caller can ask the API for a new one.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import aiohttp

__all__ = ["DownloadFailed", "LinkExpired", "download"]

#: Tries per result when the network fails, and the first back-off (doubled each time).
ATTEMPTS = 5
FIRST_BACKOFF_S = 1.0

#: Bytes written at a time.
CHUNK_BYTES = 256 * 1024


class DownloadFailed(Exception):
    """The result could not be fetched; the message says why."""


class LinkExpired(DownloadFailed):
    """The store refused the presigned link (403/404): ask the API for a fresh one."""


async def download(session: aiohttp.ClientSession, url: str, target: Path, *, attempts: int = ATTEMPTS) -> int:
    """Fetch ``url`` into ``target`` atomically; returns the number of bytes written."""
    for attempt in range(1, attempts + 1):
        try:
            return await _fetch_once(session, url, target)
        except (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            if attempt == attempts:
                raise DownloadFailed(f"the store could not be reached ({exc or type(exc).__name__})") from exc
        await asyncio.sleep(FIRST_BACKOFF_S * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


async def _fetch_once(session: aiohttp.ClientSession, url: str, target: Path) -> int:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=15, sock_read=60)
    async with session.get(url, timeout=timeout) as response:
        if response.status in (403, 404):
            raise LinkExpired(f"the store refused the result link (HTTP {response.status})")
        if response.status >= 400:
            raise aiohttp.ClientConnectionError(f"the store answered HTTP {response.status}")
        handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        written = 0
        try:
            with os.fdopen(handle, "wb") as out:
                async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                    out.write(chunk)
                    written += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            if response.content_length is not None and written != response.content_length:
                raise aiohttp.ClientPayloadError(f"got {written} of {response.content_length} bytes")
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return written
