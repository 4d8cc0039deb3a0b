"""Receivers that misbehave: 500 (retried until dead), 410 (stop), hanging (timeout), a 10 MB
answer (read bounded), a redirect (not followed). A real sender on real RabbitMQ and database, a
real aiohttp receiver; events are published to the progress exchange as the processor does."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aio_pika
import pytest
from aiohttp import web

from db.repository import Repository
from db.webhooks import NewSubscription
from harness.processor import delete_queues, free_port
from photoenhance.contracts.progress import BatchCounts, EventType, ProgressEvent, progress_routing_key
from photoenhance.settings import Settings
from photoenhance.topology import declare_progress_exchange
from webhooks.queues import declare_webhook_queues, webhook_queue_names
from webhooks.sender import Sender, open_channel
from webhooks.signing import new_secret, seal_secret

KEY = "test-secrets-key"


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    return settings.replace(
        webhook_secrets_key=KEY,
        webhook_allow_http=True,
        webhook_allow_private=("127.0.0.0/8",),
        webhook_timeout_s=1.0,
        webhook_retry_base_s=0.2,
        webhook_retry_max_delay_s=0.8,
        webhook_retry_max_s=3,
    )


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, Counter]]:
    hits: Counter = Counter()

    async def handle(request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        hits[kind] += 1
        if kind == "fail":
            return web.Response(status=500)
        if kind == "gone":
            return web.Response(status=410)
        if kind == "hang":
            await asyncio.sleep(30)
        if kind == "big":
            return web.Response(body=b"x" * (10 * 1024 * 1024))
        if kind == "redirect":
            raise web.HTTPFound("/hook/redirected")
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook/{kind}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/hook", hits
    await runner.cleanup()


async def test_misbehaving_receivers(hook_settings: Settings, repository: Repository, receiver) -> None:
    base, hits = receiver
    kinds = ["ok", "fail", "gone", "hang", "big", "redirect"]
    for kind in kinds:
        await repository.create_batch(
            kind, input_bucket="in", options={}, expected_count=2,
            webhook=NewSubscription(f"{base}/{kind}", ("image.completed",), seal_secret(new_secret(), KEY, kind)),
        )
    connection, channel = await open_channel(hook_settings)
    queue = await declare_webhook_queues(channel, hook_settings)
    sender = Sender(hook_settings, repository, channel)
    tag = await queue.consume(sender.on_message)
    publisher = await connection.channel()
    progress = await declare_progress_exchange(publisher, hook_settings)

    async def publish(batch_id: str, seq: int, type: EventType = EventType.IMAGE_COMPLETED) -> None:
        event = ProgressEvent(batch_id, seq, type, datetime.now(UTC), BatchCounts(total=2, completed=seq))
        await progress.publish(aio_pika.Message(event.to_json()), routing_key=progress_routing_key(batch_id))

    try:
        for kind in kinds:
            await publish(kind, 1)
        await publish("ok", 2, EventType.BATCH_COMPLETED)  # a type the subscription did not ask for

        async def state(batch_id: str) -> str | None:
            rows = await repository.deliveries(batch_id)
            return rows[0].state if rows else None

        deadline = time.monotonic() + 60
        while not (
            await state("ok") == "delivered"
            and await state("big") == "delivered"
            and await state("gone") == "gone"
            and await state("fail") == "dead"
            and await state("hang") == "dead"
            and await state("redirect") == "dead"
        ):
            assert time.monotonic() < deadline, {k: await state(k) for k in kinds}
            await asyncio.sleep(0.1)
        # After 410 nothing more goes to that receiver.
        await publish("gone", 2)
        await asyncio.sleep(1.0)
        rows = {k: (await repository.deliveries(k)) for k in kinds}
    finally:
        await queue.cancel(tag)
        await sender.close()
        await connection.close()
        await delete_queues(hook_settings, webhook_queue_names(hook_settings))

    assert [d.seq for d in rows["ok"]] == [1], "batch.completed was not asked for"
    assert hits["gone"] == 1 and (await repository.subscription("gone")).gone_at is not None
    assert rows["fail"][0].last_status == 500 and rows["fail"][0].attempts >= 3 and hits["fail"] == rows["fail"][0].attempts
    assert "no answer within 1.0 s" in rows["hang"][0].last_error
    assert rows["big"][0].last_status == 200
    assert rows["redirect"][0].last_status == 302 and hits["redirected"] == 0, "redirects are not followed"
    for kind in kinds:
        d = rows[kind][0]
        print(f"{kind:9} -> {d.state:9} attempts {d.attempts}, last status {d.last_status}, {d.last_error}")
