"""Webhooks end to end: the real stack, the ``photoenhance webhooks`` process, and a real aiohttp
receiver in the test that verifies every delivery with the ``standardwebhooks`` library."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from db.repository import Repository
from harness.processor import delete_queues, image_bytes, put_async
from harness.stack import Stack, StartStack
from photoenhance.contracts.states import BatchState
from photoenhance.settings import Settings
from tests.webhooks.conftest import Receiver, stack_with_sender, wait_until
from webhooks.queues import webhook_queue_names

pytestmark = [pytest.mark.objectstore]

COUNT = 50


async def _create(stack: Stack, receiver: Receiver, events: list[str] | None = None) -> dict[str, Any]:
    files = [{"name": f"p{i:02d}.jpg", "size": len(image_bytes(64, 48, seed=i)), "content_type": "image/jpeg"}
             for i in range(COUNT)]
    webhook: dict[str, Any] = {"url": receiver.url}
    if events is not None:
        webhook["events"] = events
    async with aiohttp.ClientSession() as http:
        async with http.post(stack.ingest_url + "/api/v1/batches",
                             json={"files": files, "options": {"quality": "fast"}, "webhook": webhook}) as response:
            body = await response.json()
            assert response.status == 201, body
    assert body["webhook"]["secret"].startswith("whsec_")
    return body


async def _upload_all(stack: Stack, batch_id: str) -> None:
    for i in range(COUNT):
        await put_async(stack.settings, f"{batch_id}/p{i:02d}.jpg", image_bytes(64, 48, seed=i))


async def _completed(repository: Repository, batch_id: str) -> bool:
    return (await repository.get_batch(batch_id)).state is BatchState.COMPLETED


async def test_fifty_images_every_event_delivered_signed_and_in_seq(
    start_stack: StartStack, repository: Repository, receiver: Receiver, tmp_path: Path, settings: Settings
) -> None:
    await receiver.start()
    stack, sender = await stack_with_sender(start_stack, tmp_path)
    try:
        created = await _create(stack, receiver)
        batch_id = created["batch_id"]
        started = time.monotonic()
        await _upload_all(stack, batch_id)

        async def done() -> bool:
            batch = await repository.get_batch(batch_id)
            return batch.state is BatchState.COMPLETED and len({h["webhook-id"] for h, _ in receiver.received}) >= batch.last_seq

        await wait_until(done, 180, "every event delivered", lambda: stack.logs() + sender.log())
        elapsed = time.monotonic() - started
        events = receiver.verified(created["webhook"]["secret"])
        seqs = sorted(e["seq"] for e in events.values())
        assert seqs == list(range(1, COUNT + 2)), seqs
        assert [e["type"] for e in sorted(events.values(), key=lambda e: e["seq"])][-1] == "batch.completed"
        assert all(e["batch_id"] == batch_id for e in events.values())
        # A signature made with another secret does not verify (the check above is not vacuous).
        headers, body = receiver.received[0]
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "A" * 43 + "=").verify(body, headers)
        async def recorded() -> bool:  # the sender records an outcome after the receiver answered
            return sum(d.state == "delivered" for d in await repository.deliveries(batch_id)) == COUNT + 1

        await wait_until(recorded, 30, "every delivery recorded", sender.log)
        async with aiohttp.ClientSession() as http:
            async with http.get(stack.ingest_url + f"/api/v1/batches/{batch_id}/deliveries",
                                headers={"Authorization": f"Bearer {created['token']}"}) as response:
                deliveries = await response.json()
        assert deliveries["counts"]["delivered"] == COUNT + 1 and "secret" not in json.dumps(deliveries)
        assert deliveries["webhook"]["url"] == receiver.url
        print(f"{COUNT} images: {len(receiver.received)} deliveries of {len(events)} events, all verified, "
              f"seq 1..{COUNT + 1}, {elapsed:.1f} s upload to last delivery")
    finally:
        sender.stop()
        await delete_queues(stack.settings, webhook_queue_names(stack.settings))


async def test_receiver_down_then_up_gets_everything_once_after_dedup(
    start_stack: StartStack, repository: Repository, receiver: Receiver, tmp_path: Path
) -> None:
    stack, sender = await stack_with_sender(start_stack, tmp_path)
    try:
        # Baseline: the same batch with the receiver up, for the throughput figure.
        await receiver.start()
        baseline = await _create(stack, receiver)
        started = time.monotonic()
        await _upload_all(stack, baseline["batch_id"])
        await wait_until(lambda: _completed(repository, baseline["batch_id"]), 180, "the baseline batch", stack.logs)
        baseline_s = time.monotonic() - started

        async def baseline_delivered() -> bool:
            rows = await repository.deliveries(baseline["batch_id"])
            return len(rows) == COUNT + 1 and all(d.state == "delivered" for d in rows)

        await wait_until(baseline_delivered, 60, "the baseline's deliveries", sender.log)
        await receiver.stop()  # down: connections refused
        receiver.received.clear()

        created = await _create(stack, receiver)
        batch_id = created["batch_id"]
        started = time.monotonic()
        await _upload_all(stack, batch_id)
        await wait_until(lambda: _completed(repository, batch_id), 180, "the batch to complete", stack.logs)
        pipeline_s = time.monotonic() - started
        outage = 30.0
        await asyncio.sleep(max(0.0, outage - (time.monotonic() - started)))
        retrying = [d for d in await repository.deliveries(batch_id) if d.state == "retrying"]
        assert retrying and all(d.attempts >= 1 and d.last_error for d in retrying)
        await receiver.start()
        batch = await repository.get_batch(batch_id)

        async def delivered() -> bool:
            return len({h["webhook-id"] for h, _ in receiver.received}) >= batch.last_seq

        await wait_until(delivered, 120, "every event after the outage", sender.log)
        after_up = time.monotonic() - started - outage
        events = receiver.verified(created["webhook"]["secret"])
        assert {e["batch_id"] for e in events.values()} == {batch_id}
        assert sorted(e["seq"] for e in events.values()) == list(range(1, batch.last_seq + 1))
        raw = len(receiver.received)

        async def recorded() -> bool:
            return all(d.state == "delivered" for d in await repository.deliveries(batch_id))

        await wait_until(recorded, 30, "every delivery recorded", sender.log)
        deliveries = await repository.deliveries(batch_id)
        assert {d.state for d in deliveries} == {"delivered"} and len(deliveries) == batch.last_seq
        attempts = sum(d.attempts for d in deliveries)
        print(f"receiver up: {COUNT} images uploaded to completed in {baseline_s:.1f} s ({COUNT / baseline_s:.1f} images/s); "
              f"receiver down {outage:.0f} s: {pipeline_s:.1f} s ({COUNT / pipeline_s:.1f} images/s); "
              f"all {len(events)} events delivered "
              f"{after_up:.1f} s after it came back; {raw} requests received, {len(events)} distinct webhook-ids; "
              f"{attempts} attempts in all")
    finally:
        sender.stop()
        await delete_queues(stack.settings, webhook_queue_names(stack.settings))
