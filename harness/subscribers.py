"""Progress-stream clients for tests: WebSocket and SSE subscribers that record what they get."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp

#: How long a subscriber may take to receive its first message here (2 shared cores); not a timing assert.
CONNECT_WAIT_S = 60


def stream_url(base: str, transport: str, batch_id: str, *, token: str | None = None, since: Any = None) -> str:
    """URL of a batch's stream; ``transport`` is ``ws`` or ``sse``."""
    path = f"/ws/batches/{batch_id}" if transport == "ws" else f"/events/batches/{batch_id}"
    query = {k: v for k, v in (("token", token), ("since", since)) if v is not None}
    url = base + path
    if transport == "ws":
        url = url.replace("http://", "ws://", 1)
    return f"{url}?{urlencode(query)}" if query else url


@dataclass
class Received:
    """Everything one subscription received, in order."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    #: WebSocket close code and reason (None for SSE or a client-side close).
    close_code: int | None = None
    close_reason: str | None = None
    #: SSE: the ``id:`` of each data record (None where absent).
    ids: list[str | None] = field(default_factory=list)
    stop_after_events: int | None = None
    #: Set once a snapshot or an event arrived, which proves the subscription is bound.
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["kind"] == "event"]

    @property
    def seqs(self) -> list[int]:
        return [m["seq"] for m in self.events]

    @property
    def kinds(self) -> list[str]:
        return [m["kind"] for m in self.messages if m["kind"] != "heartbeat"]

    def add(self, text: str, record_id: str | None = None) -> bool:
        """Record one message; True when the client should stop reading."""
        message = json.loads(text)
        self.messages.append(message)
        self.ids.append(record_id)
        if message["kind"] in ("snapshot", "event"):
            self.connected.set()
        return self.stop_after_events is not None and len(self.events) >= self.stop_after_events


async def follow_ws(
    session: aiohttp.ClientSession, url: str, received: Received, *, headers: dict[str, str] | None = None
) -> Received:
    """Read a WebSocket stream into ``received`` until the server closes it (or the client stops)."""
    async with session.ws_connect(url, headers=headers, autoclose=True, heartbeat=None) as ws:
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.CLOSE:
                received.close_reason = msg.extra
                break
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            if received.add(msg.data):
                await ws.close()
                break
    received.close_code = ws.close_code
    return received


async def follow_sse(
    session: aiohttp.ClientSession, url: str, received: Received, *, headers: dict[str, str] | None = None
) -> Received:
    """Read an SSE stream into ``received`` until the server ends it (or the client stops)."""
    async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=None, sock_read=120)) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        record: dict[str, str] = {}
        async for raw in resp.content:
            line = raw.decode().rstrip("\r\n")
            if line:
                if not line.startswith(":"):
                    name, _, value = line.partition(":")
                    record[name] = value[1:] if value.startswith(" ") else value
                continue
            if "data" in record and received.add(record["data"], record.get("id")):
                break
            record = {}
    return received


async def subscribe(
    session: aiohttp.ClientSession,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    stop_after_events: int | None = None,
    wait: bool = True,
) -> asyncio.Task[Received]:
    """Start following ``url`` (``ws://`` or ``http://`` for SSE) in a task.

    With ``wait``, return only once the first snapshot or event arrived: the subscription is then
    bound, so anything published afterwards reaches it.
    """
    received = Received(stop_after_events=stop_after_events)
    follow = follow_ws if url.startswith("ws") else follow_sse
    task = asyncio.create_task(follow(session, url, received, headers=headers))
    if wait:
        ready = asyncio.ensure_future(received.connected.wait())
        await asyncio.wait([task, ready], timeout=CONNECT_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if task.done():
            task.result()  # raise what went wrong
        assert received.connected.is_set(), f"no first message from {url}"
    return task
