"""A direct batch's ``_batch.json`` webhook: the API's checks, and a secret the uploader chose or
the deployment's ``WEBHOOK_DIRECT_SECRET`` (no DNS: the hosts below are address literals)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from photoenhance.settings import Settings
from processor.manifest import parse_manifest
from processor.manifest_webhook import manifest_subscription
from webhooks.signing import new_secret, open_secret
from webhooks.subscriptions import WebhookRequestError, check_secret

KEY = "test-secrets-key"
ON = Settings.from_env(environ={}).replace(webhook_secrets_key=KEY)
PUBLIC = "https://93.184.216.34/hook"  # an address literal: checked without DNS
UPLOADER = "whsec_" + base64.b64encode(bytes(range(32))).decode()
DEPLOYMENT = "whsec_" + base64.b64encode(bytes(range(100, 124))).decode()


def secret_of(sealed: str, batch_id: str = "b1") -> str:
    return open_secret(sealed, KEY, batch_id)


def test_the_manifest_keeps_its_webhook_for_the_batch_to_check() -> None:
    webhook = {"url": PUBLIC, "events": ["batch.completed"], "secret": UPLOADER}
    manifest = parse_manifest(json.dumps({"expected_count": 2, "webhook": webhook}).encode())
    assert (manifest.expected_count, manifest.webhook) == (2, webhook)
    assert parse_manifest(b"{}").webhook is None


async def test_the_uploaders_secret_signs_its_webhook() -> None:
    stored = await manifest_subscription(
        {"url": PUBLIC, "events": ["image.completed", "batch.completed"], "secret": UPLOADER},
        ON.replace(webhook_direct_secret=DEPLOYMENT), "b1",
    )
    assert (stored.url, stored.events) == (PUBLIC, ("image.completed", "batch.completed"))
    assert secret_of(stored.sealed_secret) == UPLOADER and UPLOADER not in stored.sealed_secret


async def test_without_a_secret_the_deployments_signs_and_every_event_type_is_sent() -> None:
    stored = await manifest_subscription({"url": PUBLIC}, ON.replace(webhook_direct_secret=DEPLOYMENT), "b1")
    assert secret_of(stored.sealed_secret) == DEPLOYMENT
    assert stored.events == ("image.completed", "image.failed", "batch.completed", "batch.cancelled")


@pytest.mark.parametrize(
    "secret",
    [
        "abc",
        42,
        "whsec_",
        "whsec_not base64!",
        "whsec_" + base64.b64encode(b"x" * 16).decode(),  # too short a key
        "whsec_" + base64.b64encode(b"x" * 65).decode(),  # too long a key
        new_secret()[len("whsec_"):],  # the key without its prefix
    ],
)
def test_a_chosen_secret_must_have_the_standard_form(secret: Any) -> None:
    with pytest.raises(WebhookRequestError) as refused:
        check_secret(secret)
    assert (refused.value.code, refused.value.field) == ("webhook_secret_invalid", "webhook.secret")
    print(f"{str(secret)[:40]!r} -> {refused.value.reason}")


@pytest.mark.parametrize(
    ("webhook", "settings", "code", "field"),
    [
        ({"url": PUBLIC}, ON, "webhook_secret_missing", "webhook.secret"),
        ({"url": PUBLIC}, ON.replace(webhook_direct_secret="whsec_short"), "webhook_secret_invalid",
         "WEBHOOK_DIRECT_SECRET"),
        ({"url": PUBLIC, "secret": "whsec_x"}, ON, "webhook_secret_invalid", "webhook.secret"),
        ({"url": "https://10.0.0.7/hook", "secret": UPLOADER}, ON, "webhook_url_not_public", "webhook.url"),
        ({"url": "https://169.254.169.254/latest/", "secret": UPLOADER}, ON, "webhook_url_not_public", "webhook.url"),
        ({"url": "http://93.184.216.34/hook", "secret": UPLOADER}, ON, "webhook_url_scheme", "webhook.url"),
        ({"url": "https://u:p@93.184.216.34/", "secret": UPLOADER}, ON, "webhook_url_credentials", "webhook.url"),
        ({"url": PUBLIC, "events": ["image.exploded"], "secret": UPLOADER}, ON, "invalid_webhook_events",
         "webhook.events"),
        ({"url": PUBLIC, "secret": UPLOADER, "token": "x"}, ON, "invalid_request", "webhook"),
        (PUBLIC, ON, "invalid_request", "webhook"),
        ({"url": PUBLIC, "secret": UPLOADER}, ON.replace(webhook_secrets_key=""), "webhooks_disabled", "webhook"),
    ],
)
async def test_hostile_or_unusable_webhooks_are_refused_with_a_reason(
    webhook: Any, settings: Settings, code: str, field: str
) -> None:
    with pytest.raises(WebhookRequestError) as refused:
        await manifest_subscription(webhook, settings, "b1")
    assert (refused.value.code, refused.value.field) == (code, field)
    print(f"{str(webhook)[:60]} -> {code}: {refused.value.reason}")
