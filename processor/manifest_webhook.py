"""The ``webhook`` of a direct batch's ``_batch.json``: checked by the API's rules, signed with the
uploader's own secret or the deployment's ``WEBHOOK_DIRECT_SECRET``.

A direct uploader never talks to ingest, so a secret made for it could reach it nowhere: it chooses
its secret itself (``"secret": "whsec_..."`` beside ``url`` and ``events``), or the deployment
signs every such webhook with ``WEBHOOK_DIRECT_SECRET``. With neither, the webhook is refused.
The subscription stored is the API's (:func:`webhooks.subscriptions.sealed_subscription`), so the
sender delivers it like any other.
"""

from __future__ import annotations

from typing import Any

from db.webhooks import NewSubscription
from photoenhance.settings import Settings
from webhooks.subscriptions import WebhookRequestError, check_secret, check_webhook, sealed_subscription

__all__ = ["manifest_subscription"]


async def manifest_subscription(raw: Any, settings: Settings, batch_id: str) -> NewSubscription:
    """What to store for a manifest's ``webhook`` object; raises
    :class:`~webhooks.subscriptions.WebhookRequestError` with the reason it is refused."""
    url, events = await check_webhook(raw, settings, optional=("events", "secret"))
    if raw.get("secret") is not None:
        secret = check_secret(raw["secret"])
    elif settings.webhook_direct_secret:
        secret = check_secret(settings.webhook_direct_secret, field="WEBHOOK_DIRECT_SECRET")
    else:
        raise WebhookRequestError(
            "webhook_secret_missing",
            "webhook.secret is missing and this server has no WEBHOOK_DIRECT_SECRET to sign direct batches' webhooks",
            "webhook.secret",
        )
    return sealed_subscription(url, events, secret, settings, batch_id)
