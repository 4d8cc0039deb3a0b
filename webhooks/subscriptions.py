"""A batch's webhook request, checked one way whoever makes it: the API's ``webhook`` field, an API
key's default, or a direct batch's ``_batch.json``.

``{"url": "https://...", "events": ["image.completed", ...]}``; ``events`` defaults to every type.
The URL must pass :mod:`webhooks.urls` (its host resolved now, every address checked; the sender
checks again at each delivery). Each source then seals its secret into the same
:class:`~db.webhooks.NewSubscription`, so the sender cannot tell them apart.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

from db.webhooks import NewSubscription
from photoenhance.contracts.progress import EventType
from photoenhance.settings import Settings
from webhooks.signing import seal_secret
from webhooks.urls import WebhookUrlError, parse_webhook_url, resolve_checked

__all__ = [
    "MAX_SECRET_BYTES",
    "MIN_SECRET_BYTES",
    "WEBHOOK_EVENTS",
    "WebhookRequestError",
    "check_secret",
    "check_webhook",
    "sealed_subscription",
]

#: Event types a webhook may ask for (every progress event type).
WEBHOOK_EVENTS = tuple(t.value for t in EventType)

#: Bounds of a chosen secret's key (Standard Webhooks: ``whsec_`` + base64 of 24 to 64 bytes).
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64

_SECRET_PREFIX = "whsec_"


class WebhookRequestError(ValueError):
    """A webhook that may not be subscribed: a stable ``code``, plain words, and the field at fault."""

    def __init__(self, code: str, reason: str, field: str = "webhook") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.field = field


async def check_webhook(
    raw: Any, settings: Settings, *, optional: Sequence[str] = ("events",)
) -> tuple[str, tuple[str, ...]]:
    """The URL and event types of a ``webhook`` object (which may also hold the ``optional``
    fields), resolved and checked; raises :class:`WebhookRequestError`."""
    if not settings.webhook_secrets_key:
        raise WebhookRequestError(
            "webhooks_disabled", "this server does not send webhooks (WEBHOOK_SECRETS_KEY is not set)"
        )
    if not isinstance(raw, dict) or set(raw) - {"url", *optional}:
        raise WebhookRequestError(
            "invalid_request", f"webhook must be an object with url and (optionally) {', '.join(optional)}"
        )
    events = raw.get("events", list(WEBHOOK_EVENTS))
    if not isinstance(events, list) or not events or any(e not in WEBHOOK_EVENTS for e in events):
        raise WebhookRequestError(
            "invalid_webhook_events", f"webhook.events must list some of {', '.join(WEBHOOK_EVENTS)}", "webhook.events"
        )
    try:
        target = parse_webhook_url(raw.get("url"), settings)
        await resolve_checked(target, settings)
    except WebhookUrlError as exc:
        raise WebhookRequestError(exc.code, exc.reason, "webhook.url") from exc
    return target.url, tuple(dict.fromkeys(events))


def check_secret(secret: Any, *, field: str = "webhook.secret") -> str:
    """A signing secret someone chose, if it has the Standard Webhooks form (``whsec_`` + base64
    of 24 to 64 bytes); raises :class:`WebhookRequestError` naming ``field`` otherwise."""
    form = f"whsec_ followed by the base64 of {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} random bytes"
    if not isinstance(secret, str) or not secret.startswith(_SECRET_PREFIX):
        raise WebhookRequestError("webhook_secret_invalid", f"{field} must be {form}", field)
    try:
        key = base64.b64decode(secret[len(_SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebhookRequestError("webhook_secret_invalid", f"{field} is not base64 after whsec_: {form}", field) from exc
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise WebhookRequestError(
            "webhook_secret_invalid", f"{field} holds {len(key)} bytes; it must be {form}", field
        )
    return secret


def sealed_subscription(
    url: str, events: tuple[str, ...], secret: str, settings: Settings, batch_id: str
) -> NewSubscription:
    """What to store for a checked webhook: the secret sealed to the batch (:mod:`webhooks.signing`)."""
    return NewSubscription(
        url=url, events=events, sealed_secret=seal_secret(secret, settings.webhook_secrets_key, batch_id)
    )
