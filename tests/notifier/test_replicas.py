"""Several notifier processes: every client of every replica gets every event."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import pytest

from db.repository import Repository
from harness.progress import ProgressPublisher, seed_batch
from harness.subscribers import stream_url, subscribe
from photoenhance.settings import Settings
from tests.notifier.conftest import SpawnNotifier

WAIT_S = 120


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_two_notifier_processes_each_deliver_every_event_to_their_clients(
    settings: Settings, repository: Repository, spawn_notifier: SpawnNotifier, http: aiohttp.ClientSession
) -> None:
    replicas = await asyncio.gather(spawn_notifier(), spawn_notifier())
    images = 12
    batch = await seed_batch(repository, "rep", images)
    urls = [
        stream_url(replica.base_url, transport, "rep", token=batch.token)
        for replica in replicas
        for transport in ("ws", "ws", "ws", "sse")
    ]
    clients = list(await asyncio.gather(*(subscribe(http, url) for url in urls)))
    async with ProgressPublisher(settings) as publisher:
        await publisher.finish_all(repository, batch.image_ids)
    results = await asyncio.wait_for(asyncio.gather(*clients), WAIT_S)
    for received in results:
        assert received.seqs == list(range(1, images + 2))
        assert received.kinds[-1] == "end"
    # Each replica served its clients live from its own queue, not by replaying the database.
    for replica in replicas:
        async with http.get(replica.metrics_url) as resp:
            text = await resp.text()
        live = [line for line in text.splitlines() if line.startswith("notifier_events_sent_total") and "live" in line]
        assert sum(float(line.rsplit(" ", 1)[1]) for line in live) == 4 * (images + 1)
    # SIGTERM shuts a replica down cleanly.
    for replica in replicas:
        replica.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(replica.process.wait(), 60) == 0
