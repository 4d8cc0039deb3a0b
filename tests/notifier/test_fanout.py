"""Many subscribers on one batch: each one gets every event once, in order (correctness only;
latency figures come from bench/notifier.py)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from db.repository import Repository
from harness.progress import ProgressPublisher, seed_batch
from harness.subscribers import stream_url, subscribe
from photoenhance.settings import Settings
from tests.notifier.conftest import RunningNotifier

WAIT_S = 180


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_fifty_clients_each_get_every_event(
    settings: Settings, repository: Repository, notifier: RunningNotifier, http: aiohttp.ClientSession
) -> None:
    images = 30
    batch = await seed_batch(repository, "fan", images)
    # Mostly WebSocket, some SSE; a few more join late with since=0 and meet the live stream mid-way.
    transports = ["sse" if n % 10 == 0 else "ws" for n in range(50)]
    urls = [stream_url(notifier.base_url, t, "fan", token=batch.token) for t in transports]
    clients = list(await asyncio.gather(*(subscribe(http, url) for url in urls)))
    async with ProgressPublisher(settings) as publisher:
        half = images // 2
        await publisher.finish_all(repository, batch.image_ids[:half])
        for _ in range(5):
            late_url = stream_url(notifier.base_url, "ws", "fan", token=batch.token, since=0)
            clients.append(await subscribe(http, late_url, wait=False))
        await publisher.finish_all(repository, batch.image_ids[half:])
    results = await asyncio.wait_for(asyncio.gather(*clients), WAIT_S)
    assert len(results) == 55
    for received in results:
        assert received.seqs == list(range(1, images + 2))
        assert received.kinds[-1] == "end"
    assert notifier.metric("notifier_connections_opened_total", transport="ws") == 50
    assert notifier.metric("notifier_connections_opened_total", transport="sse") == 5
