"""The whole flow: uploads into the real object store, bucket notifications through RabbitMQ, the real
processor (``fast``), and subscribers on two notifier processes.

A subscriber connected before the upload gets one event per image in sequence order, then
``batch.completed``; one that leaves half-way and resumes with ``since`` (on the other replica) gets
exactly the events it missed; every client of both replicas gets every event.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from db.repository import Repository
from harness.processor import image_bytes, put_async, running_worker
from harness.subscribers import stream_url, subscribe
from photoenhance.contracts.options import EnhanceOptions, Quality
from photoenhance.contracts.tokens import new_batch_token
from photoenhance.settings import Settings
from tests.notifier.conftest import SpawnNotifier

pytestmark = [pytest.mark.objectstore, pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]

#: Bound on the whole flow here (2 shared cores); not a speed check.
WAIT_S = 240

COUNT = 12


async def test_uploads_reach_every_subscriber_of_two_replicas_in_order_and_a_resume_misses_nothing(
    processor_settings: Settings,
    repository: Repository,
    fast_engine: object,
    spawn_notifier: SpawnNotifier,
    http: aiohttp.ClientSession,
) -> None:
    batch_id = "pipe"
    token, token_hash = new_batch_token()
    # As the ingest API creates a batch: its plan (options, expected count) and a token.
    await repository.create_batch(
        batch_id,
        input_bucket=processor_settings.s3_input_bucket,
        options=EnhanceOptions(quality=Quality.FAST, upscale=2).to_dict(),
        expected_count=COUNT,
        token_hash=token_hash,
    )
    one, two = await asyncio.gather(spawn_notifier(), spawn_notifier())
    steady = [
        await subscribe(http, stream_url(replica.base_url, transport, batch_id, token=token))
        for replica in (one, two)
        for transport in ("ws", "ws", "sse")
    ]
    leaver = await subscribe(
        http, stream_url(one.base_url, "ws", batch_id, token=token), stop_after_events=COUNT // 2
    )
    names = [f"photo {i:02d}.jpg" for i in range(COUNT)]
    async with running_worker(processor_settings, fast_engine):
        uploads = asyncio.gather(
            *(put_async(processor_settings, f"{batch_id}/{name}", image_bytes(64 + i, 48, seed=i))
              for i, name in enumerate(names))
        )
        left = await asyncio.wait_for(leaver, WAIT_S)
        resumed = await subscribe(
            http, stream_url(two.base_url, "ws", batch_id, token=token, since=left.seqs[-1]), wait=False
        )
        await uploads
        results = await asyncio.wait_for(asyncio.gather(*steady), WAIT_S)
        back = await asyncio.wait_for(resumed, WAIT_S)

    everything = list(range(1, COUNT + 2))
    for received in results:
        snapshot = received.messages[0]
        assert snapshot["kind"] == "snapshot" and snapshot["last_seq"] == 0 and snapshot["images"] == []
        assert received.seqs == everything
        assert [e["type"] for e in received.events] == ["image.completed"] * COUNT + ["batch.completed"]
        assert sorted(e["image"]["name"] for e in received.events[:-1]) == names
        assert received.kinds[-1] == "end"
    assert left.seqs == list(range(1, COUNT // 2 + 1))
    assert left.seqs + back.seqs == everything, "the resume brought exactly the missed events"
    assert back.kinds[-1] == "end" and back.close_code == 1000
    # What every subscriber got is what the processor committed.
    committed = [e.to_dict() for e in await repository.events_since(batch_id)]
    assert [{k: v for k, v in e.items() if k != "kind"} for e in results[0].events] == committed
