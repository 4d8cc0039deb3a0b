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
from photoenhance.contracts.progress import EventType
from photoenhance.contracts.states import BatchState

__all__ = ["cancel_batch"]

log = logging.getLogger(__name__)


async def cancel_batch(request: web.Request) -> web.Response:
    """Cancel the batch: 202 with its state (``cancelling`` while images are in flight, else
    ``cancelled``); again on a cancelled batch: the same answer, and its ``batch.cancelled``
    published again; a completed batch: 409; the broker away: 503 (the cancel holds; repeat it)."""
    ctx = request.app[CONTEXT]
    batch = await readable_batch(request, ctx.repository, ctx.settings)
    try:
        outcome = await ctx.repository.cancel_batch(batch.id)
    except UnknownBatch as exc:  # deleted since it was read
        raise not_found() from exc
    except BatchAlreadyCompleted as exc:
        raise ApiError(409, "batch_completed", "the batch has completed; there is nothing left to cancel") from exc
    events = outcome.events
    if outcome.repeated and outcome.batch.state is BatchState.CANCELLED:
        # Cancel again = announce the end again: repairs a batch.cancelled that the broker did
        # not take the first time (subscribers and webhook receivers drop repeats by seq / id).
        events = [e for e in await ctx.repository.events_since(batch.id, outcome.batch.last_seq - 1)
                  if e.type is EventType.BATCH_CANCELLED]
    try:
        await ctx.publisher.progress(events)
    except BrokerUnavailable as exc:
        # Committed and in the event log (the notifier replays it from there), but webhook
        # senders hear of events only through the broker: say so, and let the caller repeat.
        log.warning("cancel of batch %s: event not published: %s", batch.id, exc)
        raise ApiError(
            503, "broker_unavailable", "the batch is cancelled but its event could not be announced; cancel again"
        ) from exc
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
