"""``GET /api/v1/batches/{id}/archive``: the batch's results as one streamed ZIP.

Memory stays bounded whatever the batch size: each result object is read from the store in
chunks of :data:`CHUNK_BYTES` and each chunk is written to the client before the next is read
(aiohttp's ``write`` waits while the client's socket buffer is full, and the store connection's
reader pauses while its small buffer is full). Only the central directory (~100 bytes per entry)
grows with the batch.

When the batch is partial (failed images, images still pending, declared files never uploaded,
or a result object that has gone from the store) the archive ends with ``FAILURES.txt`` listing
each of them and why.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from aiohttp import web
from yarl import URL

from db.records import ImageRecord
from ingest.auth import readable_batch
from ingest.context import CONTEXT
from ingest.names import archive_path, collision_key, content_disposition
from ingest.zipstream import ZipStream
from photoenhance.contracts.states import ImageState

__all__ = ["CHUNK_BYTES", "FAILURES_NAME", "get_archive"]

log = logging.getLogger(__name__)

#: Bytes read from the store and written to the client at a time.
CHUNK_BYTES = 256 * 1024

#: Name of the entry listing what the archive lacks.
FAILURES_NAME = "FAILURES.txt"


async def get_archive(request: web.Request) -> web.StreamResponse:
    """Stream the ZIP; accepts ``?token=`` because browsers open this link themselves."""
    ctx = request.app[CONTEXT]
    batch = await readable_batch(request, ctx.repository, ctx.settings, query_allowed=True)
    snapshot = await ctx.repository.batch_snapshot(batch.id)
    images = snapshot.images if snapshot is not None else []
    declared = await ctx.repository.declared_files(batch.id)
    uploaded = {image.name for image in images}
    missing: list[tuple[str, str]] = [
        (f.name, "awaiting upload: the file was declared but never uploaded")
        for f in declared
        if f.name not in uploaded
    ]
    missing += [(image.name, _why_not_included(image)) for image in images if image.state is not ImageState.COMPLETED]
    completed = [image for image in images if image.state is ImageState.COMPLETED and image.output_key]

    response = web.StreamResponse(
        headers={
            "Content-Type": "application/zip",
            "Content-Disposition": content_disposition(f"photoenhance-{batch.id}.zip"),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        }
    )
    response.enable_chunked_encoding()  # the length is known only at the end
    await response.prepare(request)

    try:
        await _stream(request, response, batch.id, completed, missing)
    except ConnectionError as exc:
        if request.transport is not None and not request.transport.is_closing():
            raise  # the store's side failed, not the downloader's: a real fault, logged as one
        # The downloader went away (closed the tab, lost the network): routine, not a fault of
        # ours, so one line instead of a traceback per dropped download.
        log.info("archive %s: the client went away mid-download (%s)", batch.id, type(exc).__name__)
    return response


async def _stream(
    request: web.Request,
    response: web.StreamResponse,
    batch_id: str,
    completed: list[ImageRecord],
    missing: list[tuple[str, str]],
) -> None:
    """Write the archive's entries, then ``FAILURES.txt`` when anything is missing."""
    ctx = request.app[CONTEXT]
    archive = ZipStream()
    names = _EntryNames(reserved=[FAILURES_NAME])
    for image in completed:
        assert image.output_key is not None
        # encoded=True: the URL is sent exactly as signed (re-quoting any byte breaks the signature)
        url = URL(ctx.presigner.internal_get_url(ctx.settings.s3_output_bucket, image.output_key), encoded=True)
        async with ctx.client().get(url) as source:
            if source.status != 200:
                # Nothing of this entry has been written yet, so it can be left out cleanly.
                log.warning("archive %s: %s answered %d", batch_id, image.output_key, source.status)
                missing.append((image.name, f"result object unavailable (the store answered {source.status})"))
                continue
            name = names.take(archive_path(image.output_key.partition("/")[2]))
            await response.write(
                archive.start_entry(name, size_hint=source.content_length, modified=image.finished_at or _now())
            )
            async for chunk in source.content.iter_chunked(CHUNK_BYTES):
                await response.write(archive.data(chunk))
            await response.write(archive.end_entry())
    if missing:
        await response.write(archive.add(FAILURES_NAME, _failures_text(batch_id, missing), modified=_now()))
    await response.write(archive.finish())
    await response.write_eof()
    log.info(
        "archive %s: %d results, %d listed in %s, %d bytes",
        batch_id, len(completed), len(missing), FAILURES_NAME, archive.bytes_written,
    )


class _EntryNames:
    """Unique entry names (case-insensitively and NFKC-folded, as people and file systems read them)."""

    def __init__(self, reserved: list[str]) -> None:
        self._taken = {collision_key(name) for name in reserved}

    def take(self, wanted: str) -> str:
        head, slash, last = wanted.rpartition("/")
        stem, dot, ext = last.rpartition(".")
        if not dot:
            stem, ext = last, ""
        candidate, n = wanted, 1
        while collision_key(candidate) in self._taken:
            n += 1
            candidate = f"{head}{slash}{stem}-{n}{dot}{ext}"
        self._taken.add(collision_key(candidate))
        return candidate


def _why_not_included(image: ImageRecord) -> str:
    if image.state is ImageState.FAILED:
        return f"failed ({image.code or 'error'}): {image.reason or 'no reason recorded'}"
    if image.state is ImageState.CANCELLED:
        return "not processed: the batch was cancelled"
    return f"not finished yet ({image.state.value})"


def _failures_text(batch_id: str, missing: list[tuple[str, str]]) -> bytes:
    lines = [
        f"Batch {batch_id}: {len(missing)} image(s) are not in this archive.",
        "",
        *(f"{name}\t{reason}" for name, reason in sorted(missing)),
        "",
    ]
    # Names are the batch's safe names; reasons come from our own code, one line each.
    return "\r\n".join(line.replace("\r", " ").replace("\n", " ") for line in lines).encode("utf-8")


def _now() -> datetime:
    return datetime.now(UTC)
