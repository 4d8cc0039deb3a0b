"""Uploads straight to the object store: a presigned POST policy (API batches) or PUT (direct).

The file is streamed from disk with its length announced (the store wants ``Content-Length``,
not chunked bodies) and every chunk sent is reported, so the byte progress bar moves. Network
failures and the store's 5xx answers are retried with back-off; a refusal (4xx: expired or
violated policy) is not, since the same request would be refused again.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import aiohttp

from client.inputs import CHUNK_BYTES

__all__ = ["UploadFailed", "upload"]

#: Tries per file when the network or the store fails, and the first back-off (doubled each time).
ATTEMPTS = 5
FIRST_BACKOFF_S = 1.0

#: Seconds without progress before one attempt counts as failed.
STALL_TIMEOUT_S = 60

#: Plain words for the store's refusals a person can meet.
_STORE_REASONS = {
    "AccessDenied": "the store refused the upload (the upload link expired or does not match the file)",
    "EntityTooLarge": "the file grew after the batch was created",
    "ExpiredToken": "the upload link expired",
}


class UploadFailed(Exception):
    """The upload did not happen; ``reason`` says why in plain words, ``retryable`` whether the
    network (not the store) was at fault."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


Progress = Callable[[int], None]


async def upload(
    session: aiohttp.ClientSession,
    request: dict[str, Any],
    source: Path | bytes,
    size: int,
    on_bytes: Progress,
    *,
    attempts: int = ATTEMPTS,
) -> None:
    """Send ``source`` (a file, or bytes) as ``request`` says (``method``, ``url``, ``fields`` or ``headers``).

    ``on_bytes(n)`` is called with each chunk's size, and with a negative count when an attempt
    fails part-way (its bytes will be sent again). Raises :class:`UploadFailed`.
    """
    for attempt in range(1, attempts + 1):
        sent = 0

        def count(n: int) -> None:
            nonlocal sent
            sent += n
            on_bytes(n)

        try:
            await _send_once(session, request, source, size, count)
            return
        except UploadFailed as exc:
            on_bytes(-sent)
            if not exc.retryable or attempt == attempts:
                raise
        await asyncio.sleep(FIRST_BACKOFF_S * 2 ** (attempt - 1))


async def _send_once(
    session: aiohttp.ClientSession, request: dict[str, Any], source: Path | bytes, size: int, on_bytes: Progress
) -> None:
    method = request["method"].upper()
    if method == "POST":
        boundary = "photoenhance" + secrets.token_hex(12)
        filename = source.name if isinstance(source, Path) else "upload"
        head, tail = _multipart_envelope(boundary, request.get("fields", {}), filename)
        body = _stream(source, on_bytes, head=head, tail=tail)
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(head) + size + len(tail)),
        }
    else:
        body = _stream(source, on_bytes)
        headers = {**request.get("headers", {}), "Content-Length": str(size)}
    try:
        async with session.request(
            method, request["url"], data=body, headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=15, sock_read=STALL_TIMEOUT_S),
        ) as response:
            text = await response.text(errors="replace")
            if response.status < 300:
                return
            code, message = _store_error(text)
            reason = _STORE_REASONS.get(code) or message or f"the store answered HTTP {response.status}"
            raise UploadFailed(reason, retryable=response.status >= 500)
    except (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        raise UploadFailed(f"the store could not be reached ({exc or type(exc).__name__})", retryable=True) from exc
    except OSError as exc:  # the local file went away or became unreadable mid-upload
        raise UploadFailed(f"cannot read the file: {exc.strerror or exc}", retryable=False) from exc


def _multipart_envelope(boundary: str, fields: dict[str, str], filename: str) -> tuple[bytes, bytes]:
    """The bytes before and after the file in a POST-policy form (the file must be last)."""
    lines: list[bytes] = []
    for name, value in fields.items():
        lines += [
            f"--{boundary}".encode(),
            f'Content-Disposition: form-data; name="{name}"'.encode(),
            b"",
            str(value).encode(),
        ]
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_")
    content_type = fields.get("Content-Type", "application/octet-stream")
    lines += [
        f"--{boundary}".encode(),
        f'Content-Disposition: form-data; name="file"; filename="{ascii_name}"'.encode(),
        f"Content-Type: {content_type}".encode(),
        b"",
        b"",
    ]
    return b"\r\n".join(lines), f"\r\n--{boundary}--\r\n".encode()


async def _stream(
    source: Path | bytes, on_bytes: Progress, *, head: bytes = b"", tail: bytes = b""
) -> AsyncIterator[bytes]:
    if head:
        yield head
    if isinstance(source, bytes):
        yield source
        on_bytes(len(source))
    else:
        with open(source, "rb") as handle:
            while True:
                chunk = await asyncio.to_thread(handle.read, CHUNK_BYTES)
                if not chunk:
                    break
                yield chunk
                on_bytes(len(chunk))
    if tail:
        yield tail


def _store_error(text: str) -> tuple[str, str]:
    """``(code, message)`` from an S3 XML error body; empty strings when there is none."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError:
        return "", ""
    return (root.findtext("Code") or ""), (root.findtext("Message") or "")
