"""The ``webhook`` field of a create-batch request: checked (SSRF rules included), secret made.

``{"url": "https://...", "events": ["image.completed", ...]}``; ``events`` defaults to every type.
Without one, a batch created with an API key listed in ``API_KEY_WEBHOOKS`` gets that key's
webhook, signed with a secret derived from the key (the same for every batch of the key).
The checks are :func:`webhooks.subscriptions.check_webhook`'s, shared with direct batches' manifests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from db.webhooks import NewSubscription
from ingest.errors import ApiError
from photoenhance.settings import Settings
from webhooks.signing import new_secret
from webhooks.subscriptions import WEBHOOK_EVENTS, WebhookRequestError, check_webhook, sealed_subscription

__all__ = ["WEBHOOK_EVENTS", "RequestedWebhook", "requested_webhook"]


@dataclass(frozen=True)
class RequestedWebhook:
    """A checked webhook: what to store, and the secret to show the creator once."""

    subscription: NewSubscription
    secret: str

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.subscription.url, "events": list(self.subscription.events), "secret": self.secret}


def key_default(settings: Settings, api_key: str | None) -> tuple[str, str] | None:
    """The API key's default webhook URL and its per-key secret (``API_KEY_WEBHOOKS``), if any."""
    if api_key is None or not settings.webhook_secrets_key:
        return None
    for entry in settings.api_key_webhooks:
        key, _, url = entry.partition("=")
        if hmac.compare_digest(key.encode(), api_key.encode()) and url:
            digest = hmac.new(settings.webhook_secrets_key.encode(), b"api-key webhook\0" + api_key.encode(), hashlib.sha256)
            return url, "whsec_" + base64.b64encode(digest.digest()).decode()
    return None


async def requested_webhook(
    raw: Any, settings: Settings, batch_id: str, *, api_key: str | None = None
) -> RequestedWebhook | None:
    """Check the request's ``webhook`` field, or use the API key's default; None when neither.
    Raises :class:`ApiError` (400)."""
    if raw is None:
        default = key_default(settings, api_key)
        if default is None:
            return None
        url, secret = default
        return await _checked({"url": url}, settings, batch_id, secret)
    return await _checked(raw, settings, batch_id, None)


async def _checked(raw: Any, settings: Settings, batch_id: str, secret: str | None) -> RequestedWebhook:
    try:
        url, events = await check_webhook(raw, settings)
    except WebhookRequestError as exc:
        raise ApiError(400, exc.code, exc.reason, field=exc.field) from exc
    secret = secret or new_secret()
    return RequestedWebhook(subscription=sealed_subscription(url, events, secret, settings, batch_id), secret=secret)
