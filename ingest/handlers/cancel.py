"""``POST /api/v1/batches/{id}/cancel``: stop a batch; what is in flight finishes."""

from __future__ import annotations

import logging

from aiohttp import web

from db.cancel import BatchAlreadyCompleted
from db.transactions import UnknownBatch
from ingest.auth import readable_batch
from ingest.context import CONTEXT
from ingest.errors import ApiError, not_found
from ingest.publisher import BrokerUnavailable

__all__ = ["cancel_batch"]

log = logging.getLogger(__name__)


async def cancel_batch(request: web.Request) -> web.Response:
    """Cancel the batch: 202 with its state (``cancelling`` while images are in flight, else
    ``cancelled``); again on a cancelled batch: the same answer; a completed batch: 409."""
    ctx = request.app[CONTEXT]
    batch = await readable_batch(request, ctx.repository, ctx.settings)
    try:
        outcome = await ctx.repository.cancel_batch(batch.id)
    except UnknownBatch as exc:  # deleted since it was read
        raise not_found() from exc
    except BatchAlreadyCompleted as exc:
        raise ApiError(409, "batch_completed", "the batch has completed; there is nothing left to cancel") from exc
    try:
        await ctx.publisher.progress(outcome.events)
    except BrokerUnavailable as exc:
        # Committed and in the event log: subscribers replay it from there, webhooks likewise.
        log.warning("cancel of batch %s: event not published live: %s", batch.id, exc)
    if not outcome.repeated:
        log.info("batch %s cancelled: %d images will not be processed", batch.id, outcome.cancelled)
    record = outcome.batch
    return web.json_response(
        {
            "batch_id": record.id,
            "state": record.state.value,
            "cancelled_now": outcome.cancelled,
            "counts": {
                "uploaded": record.total,
                "completed": record.completed,
                "failed": record.failed,
                "cancelled": record.cancelled,
                "in_flight": record.total - record.completed - record.failed - record.cancelled,
            },
        },
        status=202,
    )
