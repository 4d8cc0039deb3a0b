"""Direct batches name their webhook in ``_batch.json``: the real stack (RabbitMQ, Ceph RGW, a
worker process, the ``photoenhance webhooks`` sender) and a real aiohttp receiver that verifies
every delivery with ``standardwebhooks``; hostile manifests are refused with their reason and the
images are enhanced all the same."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from db.repository import Repository
from harness.processor import (
    batch_completed,
    delete_queues,
    eventually,
    image_bytes,
    put_async,
    running_worker,
)
from harness.stack import Stack, StartStack
from photoenhance.contracts.keys import MANIFEST_NAME
from photoenhance.contracts.states import BatchState, ImageState
from photoenhance.settings import Settings
from tests.webhooks.conftest import WEBHOOK_SETTINGS, Receiver, stack_with_sender, wait_until
from webhooks.queues import webhook_queue_names

pytestmark = [pytest.mark.objectstore]

COUNT = 4
API_KEY = "server-key"
#: The uploader's own secret (Standard Webhooks form), and the deployment's WEBHOOK_DIRECT_SECRET.
UPLOADER = "whsec_" + base64.b64encode(bytes(range(32))).decode()
DEPLOYMENT = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()


async def upload_direct(settings: Settings, batch_id: str, webhook: dict[str, Any], count: int = COUNT) -> None:
    """What a direct uploader does: the manifest first (count, options, webhook), then the photos."""
    manifest = {"expected_count": count, "options": {"quality": "fast"}, "webhook": webhook}
    await put_async(settings, f"{batch_id}/{MANIFEST_NAME}", json.dumps(manifest).encode())
    for i in range(count):
        await put_async(settings, f"{batch_id}/p{i}.jpg", image_bytes(64, 48, seed=i))


async def deliveries_answer(stack: Stack, batch_id: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(stack.ingest_url + f"/api/v1/batches/{batch_id}/deliveries",
                            headers={"Authorization": f"Bearer {API_KEY}"}) as response:
            assert response.status == 200
            return await response.json()


async def test_manifest_webhooks_signed_with_the_uploaders_or_the_deployments_secret(
    start_stack: StartStack, repository: Repository, receiver: Receiver, tmp_path: Path
) -> None:
    await receiver.start()
    stack, sender = await stack_with_sender(
        start_stack, tmp_path, webhook_direct_secret=DEPLOYMENT, api_keys=(API_KEY,)
    )
    try:
        own, shared, hostile = "direct-own-secret", "direct-deployment-secret", "direct-private-hook"
        await upload_direct(stack.settings, own, {"url": receiver.url, "secret": UPLOADER})
        await upload_direct(stack.settings, shared, {"url": receiver.url, "events": ["image.completed", "batch.completed"]})
        await upload_direct(stack.settings, hostile, {"url": "https://10.0.0.7/hook", "secret": UPLOADER})

        async def all_delivered() -> bool:
            batches = [await repository.get_batch(batch_id) for batch_id in (own, shared, hostile)]
            completed = all(b is not None and b.state is BatchState.COMPLETED for b in batches)
            return completed and len({h["webhook-id"] for h, _ in receiver.received}) >= 2 * (COUNT + 1)

        await wait_until(all_delivered, 180, "both webhooks' events", lambda: stack.logs() + sender.log())
        for batch_id, secret, other in ((own, UPLOADER, DEPLOYMENT), (shared, DEPLOYMENT, UPLOADER)):
            events = receiver.verified(secret, batch_id)
            ordered = sorted(events.values(), key=lambda e: e["seq"])
            assert [e["type"] for e in ordered] == ["image.completed"] * COUNT + ["batch.completed"], ordered
            headers, body = next((h, b) for h, b in receiver.received if json.loads(b)["batch_id"] == batch_id)
            with pytest.raises(WebhookVerificationError):  # the check above is not vacuous
                Webhook(other).verify(body, headers)
            stored = await repository.subscription(batch_id)
            assert stored is not None and secret not in stored.sealed_secret
        assert (await repository.subscription(shared)).events == ["image.completed", "batch.completed"]

        # The hostile one: nothing sent to 10.0.0.7, its images enhanced, and the reason shown.
        assert await repository.subscription(hostile) is None
        snapshot = await repository.batch_snapshot(hostile)
        assert [i.state for i in snapshot.images] == [ImageState.COMPLETED] * COUNT
        answer = await deliveries_answer(stack, hostile)
        assert answer["webhook"] is None and answer["deliveries"] == []
        assert answer["webhook_refused"]["code"] == "webhook_url_not_public", answer
        assert "10.0.0.7" in answer["webhook_refused"]["reason"]
        assert (await deliveries_answer(stack, own))["webhook_refused"] is None
        print(f"own secret: {len(receiver.verified(UPLOADER, own))} events verified; WEBHOOK_DIRECT_SECRET: "
              f"{len(receiver.verified(DEPLOYMENT, shared))}; private address refused: {answer['webhook_refused']}")
    finally:
        sender.stop()
        await delete_queues(stack.settings, webhook_queue_names(stack.settings))


HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    "private": ({"url": "https://192.168.1.20/hook", "secret": UPLOADER}, "webhook_url_not_public"),
    "metadata": ({"url": "https://169.254.169.254/latest/meta-data/", "secret": UPLOADER}, "webhook_url_not_public"),
    "http": ({"url": "http://93.184.216.34/hook", "secret": UPLOADER}, "webhook_url_scheme"),
    "bad-secret": ({"url": "https://93.184.216.34/hook", "secret": "whsec_c2hvcnQ="}, "webhook_secret_invalid"),
    "no-secret": ({"url": "https://93.184.216.34/hook"}, "webhook_secret_missing"),
    "unknown-event": ({"url": "https://93.184.216.34/hook", "events": ["image.exploded"], "secret": UPLOADER},
                      "invalid_webhook_events"),
}


async def test_hostile_manifest_webhooks_are_refused_and_no_image_is_lost(
    processor_settings: Settings, repository: Repository, fast_engine: Any
) -> None:
    # Strict rules (https, public addresses only) and no WEBHOOK_DIRECT_SECRET.
    settings = processor_settings.replace(webhook_secrets_key=WEBHOOK_SETTINGS["webhook_secrets_key"])
    async with running_worker(settings, fast_engine):
        for name, (webhook, _) in HOSTILE.items():
            await upload_direct(settings, f"hostile-{name}", webhook, count=2)
        for name, (_, code) in HOSTILE.items():
            batch_id = f"hostile-{name}"
            batch = await batch_completed(repository, batch_id)
            snapshot = await repository.batch_snapshot(batch_id)
            # The rest of the manifest holds: its count completed the batch, its options were used.
            assert batch.expected_count == 2 and batch.options["quality"] == "fast"
            assert [i.state for i in snapshot.images] == [ImageState.COMPLETED] * 2
            assert await repository.subscription(batch_id) is None
            refused = await repository.webhook_refusal(batch_id)
            assert refused is not None and refused.code == code, (name, refused)
            print(f"{name}: {code}: {refused.reason}")


async def test_a_manifest_after_the_first_photo_still_subscribes_its_webhook(
    processor_settings: Settings, repository: Repository, fast_engine: Any
) -> None:
    settings = processor_settings.replace(**WEBHOOK_SETTINGS)
    url = "http://127.0.0.1:9/hook"
    async with running_worker(settings, fast_engine):
        await put_async(settings, "late-manifest/first.jpg", image_bytes(64, 48, seed=1), {"photoenhance-quality": "fast"})
        await eventually(lambda: repository.get_batch("late-manifest"), what="the implicit batch")
        assert await repository.subscription("late-manifest") is None
        manifest = {"expected_count": 1, "webhook": {"url": url, "secret": UPLOADER, "events": ["batch.completed"]}}
        await put_async(settings, f"late-manifest/{MANIFEST_NAME}", json.dumps(manifest).encode())
        stored = await eventually(lambda: repository.subscription("late-manifest"), what="the subscription")
        assert (stored.url, stored.events) == (url, ["batch.completed"])
        await batch_completed(repository, "late-manifest")
