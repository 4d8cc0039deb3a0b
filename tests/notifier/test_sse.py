"""The same stream as Server-Sent Events: ids, Last-Event-ID resume, and the end."""

from __future__ import annotations

import asyncio

import aiohttp

from db.repository import Repository
from harness.progress import ProgressPublisher, seed_batch
from harness.subscribers import stream_url, subscribe
from notifier.sse import sse_record
from notifier.stream import Outgoing
from photoenhance.contracts.progress_stream import MessageKind
from photoenhance.settings import Settings
from tests.notifier.conftest import RunningNotifier

WAIT_S = 60


def test_records_follow_the_event_stream_format() -> None:
    event = Outgoing(MessageKind.EVENT, b'{"kind":"event","seq":7,"note":"a\\nb"}', 7)
    assert sse_record(event) == b'id: 7\ndata: {"kind":"event","seq":7,"note":"a\\nb"}\n\n'
    assert sse_record(Outgoing(MessageKind.HEARTBEAT, b"{}")) == b": heartbeat\n\n"
    assert sse_record(Outgoing(MessageKind.END, b'{"kind":"end"}')) == b'data: {"kind":"end"}\n\n'


async def test_sse_carries_what_the_websocket_carries_with_resumable_ids(
    settings: Settings, repository: Repository, notifier: RunningNotifier, http: aiohttp.ClientSession
) -> None:
    batch = await seed_batch(repository, "s1", 4)
    sse = await subscribe(http, stream_url(notifier.base_url, "sse", "s1", token=batch.token))
    ws = await subscribe(http, stream_url(notifier.base_url, "ws", "s1", token=batch.token))
    async with ProgressPublisher(settings) as publisher:
        await publisher.finish_all(repository, batch.image_ids)
    over_sse, over_ws = await asyncio.wait_for(asyncio.gather(sse, ws), WAIT_S)
    assert over_sse.messages == over_ws.messages
    assert over_sse.kinds == ["snapshot"] + ["event"] * 5 + ["end"]
    # The snapshot's id is its last_seq, each event's id its seq; the end has none.
    assert over_sse.ids == ["0", "1", "2", "3", "4", "5", None]
    assert notifier.metric("notifier_events_sent_total", transport="sse", source="live") == 5


async def test_last_event_id_resumes_after_it_and_wins_over_since(
    settings: Settings, repository: Repository, notifier: RunningNotifier, http: aiohttp.ClientSession
) -> None:
    batch = await seed_batch(repository, "s2", 5)
    async with ProgressPublisher(settings) as publisher:
        await publisher.finish_all(repository, batch.image_ids[:3])
        url = stream_url(notifier.base_url, "sse", "s2", token=batch.token, since=0)
        # What EventSource sends when it reconnects after seeing id 2.
        resumed = await subscribe(http, url, headers={"Last-Event-ID": "2"})
        await publisher.finish_all(repository, batch.image_ids[3:])
    received = await asyncio.wait_for(resumed, WAIT_S)
    assert received.seqs == [3, 4, 5, 6]
    assert received.ids[:4] == ["3", "4", "5", "6"]
    assert received.kinds[-1] == "end"
    assert notifier.metric("notifier_replays_total", transport="sse", mode="since") == 1


async def test_sse_allows_any_origin_because_tokens_are_not_cookies(
    repository: Repository, notifier: RunningNotifier, http: aiohttp.ClientSession
) -> None:
    batch = await seed_batch(repository, "s3", 1)
    url = stream_url(notifier.base_url, "sse", "s3", token=batch.token)
    async with http.get(url, headers={"Origin": "http://page.example"}) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert resp.headers["Cache-Control"].startswith("no-cache")
        first = await resp.content.readuntil(b"\n\n")
        assert first == b"retry: 1000\n\n"
