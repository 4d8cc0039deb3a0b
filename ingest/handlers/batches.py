"""Batches: create one (with presigned uploads), read its status, retry its failed images."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from aiohttp import web

from db.records import ImageRecord
from db.repository import DeclaredFile
from db.status_pages import ImageStatus
from ingest.auth import readable_batch, require_creator
from ingest.context import CONTEXT, IngestContext
from ingest.errors import RETRY_TOO_SOON, ApiError, error_response, not_found
from ingest.final_pages import page_version
from ingest.fleet import batch_options, live_levels, mark_waiting
from ingest.ids import new_ulid
from ingest.json_body import require_json_content_type
from ingest.presign import Upload
from ingest.publisher import BrokerUnavailable
from ingest.quota_guard import charged, creation_quota, creator_api_key
from ingest.status_paging import encode_cursor, page_request
from ingest.validation import DeclaredUpload, parse_create_request
from ingest.webhook_request import requested_webhook
from photoenhance.contracts.events import notification_body
from photoenhance.contracts.failures import why_retry_cannot_help
from photoenhance.contracts.keys import input_key
from photoenhance.contracts.states import BatchState, ImageState
from photoenhance.contracts.tokens import new_batch_token
from photoenhance.settings import Settings

__all__ = ["create_batch", "get_batch", "retry_batch"]

log = logging.getLogger(__name__)

#: ``state`` of a declared file whose upload the store has not announced yet.
AWAITING_UPLOAD = "awaiting_upload"


async def create_batch(request: web.Request) -> web.Response:
    """``POST /api/v1/batches``: check the request, sign one upload per file, store the batch."""
    ctx = request.app[CONTEXT]
    require_creator(request, ctx.settings)
    require_json_content_type(request)
    req = parse_create_request(await request.read(), ctx.settings)
    quota = creation_quota(request, ctx.settings, files=len(req.files), total_bytes=sum(f.size for f in req.files))
    batch_id = new_ulid()
    webhook = await requested_webhook(req.webhook, ctx.settings, batch_id, api_key=creator_api_key(request, ctx.settings))
    token, token_hash = new_batch_token()
    # Signing is local computation; do it before the batch exists so a failure leaves nothing.
    uploads = [_sign(ctx, batch_id, f, req.upload) for f in req.files]
    expires_at = ctx.presigner.expires_at()
    options, level_reason = await batch_options(ctx, req)
    await charged(
        ctx.repository.create_batch(
            batch_id,
            input_bucket=ctx.settings.s3_input_bucket,
            options=options.to_dict(),
            source="api",
            expected_count=len(req.files),
            token_hash=token_hash,
            files=[DeclaredFile(f.name, f.original_name, f.size, f.content_type) for f in req.files],
            quota=quota,
            webhook=None if webhook is None else webhook.subscription,
        )
    )
    log.info("batch %s created with %d files (%s uploads)", batch_id, len(req.files), req.upload)
    body = {
        "batch_id": batch_id,
        "token": token,
        "state": "open",
        "expected_count": len(req.files),
        "options": options.to_dict(),
        "level": {"chosen": options.quality.value, "reason": level_reason},
        "expires_at": expires_at.isoformat().replace("+00:00", "Z"),
        "uploads": [
            {
                "name": f.name,
                "original_name": f.original_name,
                "size": f.size,
                "content_type": f.content_type,
                **upload.to_dict(),
            }
            for f, upload in zip(req.files, uploads, strict=True)
        ],
        "progress": progress_urls(ctx.settings, batch_id),
        "links": _links(batch_id),
    }
    if webhook is not None:
        body["webhook"] = webhook.to_dict()  # the secret is shown here only
    return web.json_response(body, status=201, headers={"Location": f"/api/v1/batches/{batch_id}"})


async def get_batch(request: web.Request) -> web.Response:
    """``GET /api/v1/batches/{id}``: counts, state, and one page of images with their result links.

    ``?limit=`` images per page (:data:`~ingest.status_paging.DEFAULT_PAGE_SIZE`, at most
    :data:`~ingest.status_paging.MAX_PAGE_SIZE`), ``?after=`` the ``next`` cursor of the previous
    page. Result links are signed and the answer encoded on ingest's CPU thread: signing hundreds
    of links is CPU work that would otherwise hold up every other request ingest serves
    (``/healthz`` included).
    """
    ctx = request.app[CONTEXT]
    after, limit = page_request(request.query)
    batch = await readable_batch(request, ctx.repository, ctx.settings)
    # A completed or cancelled batch's page is rendered once per row version and link window.
    window = ctx.presigner.link_window()
    version = page_version(batch, after, limit, window)
    stored = ctx.final_pages.get(version) if version is not None else None
    if stored is not None:
        return _status_response(stored)
    page = await ctx.repository.status_page(batch.id, after=after, limit=limit)
    if page is None:  # deleted between the two reads
        raise not_found()
    batch = page.batch
    # A declared file whose upload never came will be ignored once the batch is cancelled.
    cancelled = batch.state in (BatchState.CANCELLING, BatchState.CANCELLED)
    live = await live_levels(ctx)
    waiting = sum(n for level, n in page.pending_by_level.items() if level not in live)
    head = {
        "batch_id": batch.id,
        "state": batch.state.value,
        "source": batch.source,
        "options": batch.options,
        "counts": {
            "expected": batch.expected_count,
            "uploaded": batch.total,
            "awaiting_upload": 0 if cancelled else page.awaiting_upload,
            "waiting_for_worker": waiting,
            "pending": batch.total - batch.completed - batch.failed - batch.cancelled,
            "completed": batch.completed,
            "failed": batch.failed,
            "cancelled": batch.cancelled,
        },
        "created_at": _iso(batch.created_at),
        "completed_at": _iso(batch.completed_at),
        "last_seq": batch.last_seq,
    }
    tail = {
        "next": encode_cursor(page.entries[-1][0]) if page.more else None,
        "progress": progress_urls(ctx.settings, batch.id),
        "links": _links(batch.id),
    }
    body = await asyncio.get_running_loop().run_in_executor(
        ctx.cpu, _render_page, ctx, head, page.entries, tail, cancelled, live
    )
    # Filed under the row the page itself was read with (it may have moved since the check) and the
    # window before signing (were it to roll meanwhile, the page is filed under a window now past).
    rendered_version = page_version(batch, after, limit, window)
    if rendered_version is not None:
        ctx.final_pages.put(rendered_version, body)
    return _status_response(body)


def _status_response(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json", headers={"Cache-Control": "no-store"})


def _render_page(
    ctx: IngestContext,
    head: dict[str, Any],
    entries: list[tuple[str, DeclaredFile | None, ImageStatus | None]],
    tail: dict[str, Any],
    cancelled: bool,
    live: set[str],
) -> bytes:
    """The status answer as JSON bytes: signing and encoding, on a worker thread."""
    images = _page_entries(ctx, entries, cancelled)
    mark_waiting(images, {name: image for name, _, image in entries if image is not None}, live)
    return json.dumps({**head, "images": images, **tail}).encode("utf-8")


def _page_entries(
    ctx: IngestContext, entries: list[tuple[str, DeclaredFile | None, ImageStatus | None]], cancelled: bool
) -> list[dict[str, Any]]:
    """A page's image entries with their signed links (runs on a worker thread); in a cancelled
    batch a declared file that was never uploaded is ``cancelled`` (its upload will be ignored)."""
    out = []
    for name, declared, image in entries:
        entry = _image_entry(
            ctx,
            name,
            declared.original_name if declared is not None else name,
            image,
            declared_size=declared.declared_size if declared is not None else None,
        )
        if image is None and cancelled:
            entry["state"] = ImageState.CANCELLED.value
        out.append(entry)
    return out


async def retry_batch(request: web.Request) -> web.Response:
    """``POST /api/v1/batches/{id}/retry``: failed images a retry can help back to pending, and announced again.

    Images whose failure code a retry cannot help (:attr:`FailureCode.retry_can_help`: not an image,
    too many pixels, ...) stay failed and are reported in ``skipped``, counted per code. One retry per
    batch per RETRY_MIN_INTERVAL_S is accepted; a sooner one gets 429 with ``Retry-After``.

    Every image left pending is announced, not only the ones failed a moment ago: if an earlier
    retry committed but could not publish (broker down), calling retry again still gets those
    images processed. A duplicate announcement is harmless, since processing is idempotent.
    """
    ctx = request.app[CONTEXT]
    require_json_content_type(request, body_optional=True)
    batch = await readable_batch(request, ctx.repository, ctx.settings)
    if batch.state in (BatchState.CANCELLING, BatchState.CANCELLED):
        raise ApiError(409, "batch_cancelled", "the batch was cancelled; create a new batch instead")
    outcome = await ctx.repository.retry_failed(batch.id, min_interval_s=ctx.settings.retry_min_interval_s)
    if outcome.retry_after_s is not None:
        wait = max(1, math.ceil(outcome.retry_after_s))
        response = error_response(429, RETRY_TOO_SOON, f"this batch was retried a moment ago; try again in {wait} s")
        response.headers["Retry-After"] = str(wait)
        return response
    pending = [i for i in await ctx.repository.unfinished_images(batch.id) if i.state is ImageState.PENDING]
    bodies = [_announcement(image) for image in pending]
    try:
        await ctx.publisher.announce(bodies)
    except BrokerUnavailable as exc:
        log.warning("retry of batch %s: %s", batch.id, exc)
        if outcome.retried_at is not None:  # not carried out: the next call is no second retry
            await ctx.repository.forget_retry(batch.id, outcome.retried_at)
        raise ApiError(
            503, "broker_unavailable", "the images are queued for retry but could not be announced; try again"
        ) from exc
    log.info(
        "batch %s: %d failed images retried, %d announced, skipped %s",
        batch.id, len(outcome.retried), len(bodies), outcome.skipped,
    )
    body: dict[str, Any] = {"batch_id": batch.id, "retried": len(outcome.retried), "announced": len(bodies)}
    if outcome.skipped:
        body["skipped"] = {
            code: {"count": count, "reason": why_retry_cannot_help(code)}
            for code, count in sorted(outcome.skipped.items())
        }
    return web.json_response(body, status=202)


def progress_urls(settings: Settings, batch_id: str) -> dict[str, str]:
    """The notifier's WebSocket and SSE URLs for a batch (the client adds ``?token=``)."""
    base = settings.notifier_public_url.rstrip("/") or f"http://{settings.notifier_host}:{settings.notifier_port}"
    parts = urlsplit(base)
    ws_scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/")
    quoted = quote(batch_id, safe="")
    return {
        "websocket": urlunsplit((ws_scheme, parts.netloc, f"{path}/ws/batches/{quoted}", "", "")),
        "events": urlunsplit((parts.scheme, parts.netloc, f"{path}/events/batches/{quoted}", "", "")),
    }


def _sign(ctx: IngestContext, batch_id: str, f: DeclaredUpload, method: str) -> Upload:
    # A PUT only when the server allows it: see UPLOAD_METHODS in ingest/validation.py for why.
    key = input_key(batch_id, f.name)
    if method == "put":
        return ctx.presigner.upload_put(key, content_type=f.content_type)
    return ctx.presigner.upload_post(key, size=f.size, content_type=f.content_type)


def _image_entry(
    ctx: IngestContext, name: str, original_name: str, image: ImageStatus | None, *, declared_size: int | None = None
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "original_name": original_name,
        "state": AWAITING_UPLOAD if image is None else image.state.value,
        "size": declared_size if image is None else image.size,
    }
    if image is None:
        return entry
    if image.state is ImageState.FAILED:
        entry["reason"] = image.reason
        entry["code"] = image.code
    if image.state is ImageState.COMPLETED and image.output_key:
        result_name = image.output_key.rsplit("/", 1)[-1]
        entry["result"] = {
            "key": image.output_key,
            "url": ctx.presigner.download_url(ctx.settings.s3_output_bucket, image.output_key, result_name),
        }
    return entry


def _announcement(image: ImageRecord) -> bytes:
    return notification_body(
        image.bucket,
        image.key,
        image.etag,
        image.size,
        image.uploaded_at or image.created_at,
        source="photoenhance:retry",
    )


def _links(batch_id: str) -> dict[str, str]:
    base = f"/api/v1/batches/{batch_id}"
    return {"self": base, "archive": f"{base}/archive", "retry": f"{base}/retry", "cancel": f"{base}/cancel"}


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")

