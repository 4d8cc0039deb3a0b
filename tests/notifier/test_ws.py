"""The WebSocket stream against real RabbitMQ and a real database, progress driven as the processor does."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from db.repository import Repository
from harness.progress import ProgressPublisher, finish, seed_batch
from harness.subscribers import stream_url, subscribe
from photoenhance.settings import Settings
from tests.notifier.conftest import RunningNotifier, StartNotifier

#: Generous bound on how long any one stream may take here (2 shared cores); not a timing assert.
WAIT_S = 60


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_subscriber_before_processing_gets_each_event_in_order_then_the_end(
    settings: Settings, repository: Repository, notifier: RunningNotifier, http: aiohttp.ClientSession
) -> None:
    batch = await seed_batch(repository, "b1", 5)
    client = await subscribe(http, stream_url(notifier.base_url, "ws", "b1", token=batch.token))
    async with ProgressPublisher(settings) as publisher:
        published = await publisher.finish_all(repository, batch.image_ids)
    received = await asyncio.wait_for(client, WAIT_S)

    assert received.kinds == ["snapshot"] + ["event"] * 6 + ["end"]
    snapshot = received.messages[0]
    assert snapshot["last_seq"] == 0 and snapshot["state"] == "open"
    assert [(i["name"], i["state"]) for i in snapshot["images"]] == [(f"img{i:03d}.jpg", "pending") for i in range(5)]
    assert received.seqs == [1, 2, 3, 4, 5, 6]
    assert [e["type"] for e in received.events] == ["image.completed"] * 5 + ["batch.completed"]
    # What the client got is what the database committed, field for field.
    assert [{k: v for k, v in e.items() if k != "kind"} for e in received.events] == [p.to_dict() for p in published]
    assert received.messages[-1] == {"kind": "end", "reason": "batch_completed", "last_seq": 6}
    assert received.close_code == 1000
    assert notifier.metric("notifier_events_sent_total", transport="ws", source="live") == 6


async def test_reconnecting_with_since_gets_exactly_the_missed_events(
    settings: Settings, repository: Repository, notifier: RunningNotifier, http: aiohttp.ClientSession
) -> None:
    batch = await seed_batch(repository, "b2", 6)
    ids = batch.image_ids
    async with ProgressPublisher(settings) as publisher:
        url = stream_url(notifier.base_url, "ws", "b2", token=batch.token)
        first = await subscribe(http, url, stop_after_events=2)
        await publisher.finish_all(repository, ids[:2])
        before = await asyncio.wait_for(first, WAIT_S)
        assert before.seqs == [1, 2]
        # Disconnected: two more images finish and are published to nobody.
        await publisher.finish_all(repository, ids[2:4])
        since = before.seqs[-1]
        second = await subscribe(http, stream_url(notifier.base_url, "ws", "b2", token=batch.token, since=since))
        # The rest finishes while the reconnect replays: the seam must neither drop nor repeat.
        await publisher.finish_all(repository, ids[4:])
        after = await asyncio.wait_for(second, WAIT_S)
    assert after.kinds[0] == "event"  # no snapshot with since
    assert after.seqs == [3, 4, 5, 6, 7]
    assert before.seqs + after.seqs == list(range(1, 8))
    assert after.close_code == 1000


async def test_duplicate_and_lost_publishes_still_give_each_event_once(
    settings: Settings, repository: Repository, notifier: RunningNotifier, http: aiohttp.ClientSession
) -> None:
    batch = await seed_batch(repository, "b3", 4)
    client = await subscribe(http, stream_url(notifier.base_url, "ws", "b3", token=batch.token))
    async with ProgressPublisher(settings) as publisher:
        for n, image_id in enumerate(batch.image_ids):
            events = await finish(repository, image_id)
            if n == 1:
                continue  # committed, never published (a crash between commit and publish)
            await publisher.publish(events)
            await publisher.publish(events)  # and a redelivery publishes again
    received = await asyncio.wait_for(client, WAIT_S)
    assert received.seqs == [1, 2, 3, 4, 5]
    assert notifier.metric("notifier_catch_ups_total", reason="gap") >= 1


async def test_a_completed_batch_gets_its_snapshot_and_the_end(
    repository: Repository, notifier: RunningNotifier, http: aiohttp.ClientSession
) -> None:
    batch = await seed_batch(repository, "b4", 2)
    for image_id in batch.image_ids:
        await finish(repository, image_id)
    received = await asyncio.wait_for(
        await subscribe(http, stream_url(notifier.base_url, "ws", "b4", token=batch.token)), WAIT_S
    )
    assert received.kinds == ["snapshot", "end"]
    assert received.messages[0]["state"] == "completed" and received.messages[0]["last_seq"] == 3
    assert received.close_code == 1000
    replay = await asyncio.wait_for(
        await subscribe(http, stream_url(notifier.base_url, "ws", "b4", token=batch.token, since=1)), WAIT_S
    )
    assert replay.seqs == [2, 3] and replay.kinds[-1] == "end"


async def test_shutdown_closes_streams_with_going_away(
    repository: Repository, notifier: RunningNotifier, http: aiohttp.ClientSession
) -> None:
    batch = await seed_batch(repository, "b5", 1)
    client = await subscribe(http, stream_url(notifier.base_url, "ws", "b5", token=batch.token))
    await notifier.runner.cleanup()
    received = await asyncio.wait_for(client, WAIT_S)
    assert received.kinds == ["snapshot"]
    assert received.close_code == 1001


async def test_heartbeats_keep_a_quiet_stream_alive(
    repository: Repository, start_notifier: StartNotifier, http: aiohttp.ClientSession
) -> None:
    notifier = await start_notifier(ws_heartbeat_s=0.2)
    batch = await seed_batch(repository, "b6", 1)
    url = stream_url(notifier.base_url, "ws", "b6", token=batch.token)
    async with http.ws_connect(url) as ws:
        kinds = [(await ws.receive_json(timeout=WAIT_S))["kind"] for _ in range(3)]
    assert kinds == ["snapshot", "heartbeat", "heartbeat"]
