"""Naming a webhook when creating a batch: refused with its reason, or stored with a secret shown once."""

from __future__ import annotations

import pytest

from photoenhance.settings import Settings
from tests.ingest.conftest import StartIngest, image_file

KEY = "test-secrets-key"


@pytest.mark.parametrize(
    ("webhook", "code"),
    [
        ({"url": "https://127.0.0.1/hook"}, "webhook_url_not_public"),
        ({"url": "https://169.254.169.254/latest/meta-data/"}, "webhook_url_not_public"),
        ({"url": "https://localhost/hook"}, "webhook_url_not_public"),
        ({"url": "http://example.com/hook"}, "webhook_url_scheme"),
        ({"url": "https://u:p@example.com/hook"}, "webhook_url_credentials"),
        ({"url": "https://" + "a" * 3000}, "webhook_url_too_long"),
        ({"url": "no url at all"}, "webhook_url_invalid"),
        ({"url": "https://example.com/", "events": ["image.exploded"]}, "invalid_webhook_events"),
        ({"url": "https://example.com/", "extra": 1}, "invalid_request"),
    ],
)
async def test_bad_webhooks_are_refused_and_create_nothing(
    start_ingest: StartIngest, settings: Settings, webhook: dict, code: str
) -> None:
    ingest = await start_ingest(settings.replace(webhook_secrets_key=KEY))
    async with ingest.http.post(ingest.url("/api/v1/batches"), json={"files": [image_file()], "webhook": webhook}) as response:
        body = await response.json()
    assert (response.status, body["error"]["code"]) == (400, code), body
    assert body["error"]["field"].startswith("webhook")
    assert await ingest.repository.open_batches() == []
    print(f"{str(webhook)[:70]} -> {response.status} {code}: {body['error']['message']}")


async def test_webhooks_are_off_without_a_secrets_key(start_ingest: StartIngest, settings: Settings) -> None:
    ingest = await start_ingest(settings)
    async with ingest.http.post(
        ingest.url("/api/v1/batches"), json={"files": [image_file()], "webhook": {"url": "https://example.com/"}}
    ) as response:
        assert (response.status, (await response.json())["error"]["code"]) == (400, "webhooks_disabled")


async def test_the_secret_is_shown_once_and_stored_sealed(start_ingest: StartIngest, settings: Settings) -> None:
    allowed = settings.replace(webhook_secrets_key=KEY, webhook_allow_http=True, webhook_allow_private=("127.0.0.1",))
    ingest = await start_ingest(allowed)
    created = await ingest.create([image_file()], webhook={"url": "http://127.0.0.1:9/hook", "events": ["batch.completed"]})
    secret = created["webhook"]["secret"]
    stored = await ingest.repository.subscription(created["batch_id"])
    assert stored.events == ["batch.completed"] and secret not in stored.sealed_secret
    async with ingest.http.get(
        ingest.url(f"/api/v1/batches/{created['batch_id']}/deliveries"),
        headers={"Authorization": f"Bearer {created['token']}"},
    ) as response:
        body = await response.json()
    assert response.status == 200 and body["deliveries"] == [] and secret not in str(body)
    async with ingest.http.get(ingest.url(f"/api/v1/batches/{created['batch_id']}/deliveries")) as response:
        assert response.status == 404  # no credential: the unknown-batch answer


async def test_an_api_keys_default_webhook_and_its_per_key_secret(start_ingest: StartIngest, settings: Settings) -> None:
    keyed = settings.replace(
        webhook_secrets_key=KEY, webhook_allow_http=True, webhook_allow_private=("127.0.0.1",),
        api_keys=("key-one", "key-two"), api_key_webhooks=("key-one=http://127.0.0.1:9/one",),
    )
    ingest = await start_ingest(keyed)

    async def create(key: str | None, **extra) -> dict:
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        async with ingest.http.post(ingest.url("/api/v1/batches"), json={"files": [image_file()], **extra},
                                    headers=headers) as response:
            assert response.status == 201
            return await response.json()

    first, second = await create("key-one"), await create("key-one")
    assert first["webhook"]["url"] == "http://127.0.0.1:9/one"
    assert first["webhook"]["secret"] == second["webhook"]["secret"]  # one secret per key
    assert "webhook" not in await create("key-two") and "webhook" not in await create(None)
    own = await create("key-one", webhook={"url": "http://127.0.0.1:9/own"})  # a batch's own webhook wins
    assert own["webhook"]["url"].endswith("/own") and own["webhook"]["secret"] != first["webhook"]["secret"]
