"""``GET /api/v1/batches/{id}/deliveries``: where each webhook delivery of a batch stands."""

from __future__ import annotations

from aiohttp import web

from ingest.auth import readable_batch
from ingest.context import CONTEXT

__all__ = ["get_deliveries"]


async def get_deliveries(request: web.Request) -> web.Response:
    """The batch's webhook (without its secret) and one entry per event delivered or tried:
    ``retrying``, ``delivered``, ``dead`` (retries ran out) or ``gone`` (the receiver said 410).
    ``webhook_refused`` says why a direct batch's manifest webhook was refused (null otherwise)."""
    ctx = request.app[CONTEXT]
    batch = await readable_batch(request, ctx.repository, ctx.settings)
    subscription = await ctx.repository.subscription(batch.id)
    deliveries = await ctx.repository.deliveries(batch.id)
    refused = await ctx.repository.webhook_refusal(batch.id)
    body = {
        "batch_id": batch.id,
        "webhook": None
        if subscription is None
        else {
            "url": subscription.url,
            "events": subscription.events,
            "gone": subscription.gone_at is not None,
        },
        "webhook_refused": None if refused is None else refused.to_dict(),
        "counts": {state: sum(1 for d in deliveries if d.state == state) for state in ("retrying", "delivered", "dead", "gone")},
        "deliveries": [d.to_dict() for d in deliveries],
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})
