"""The hub's queue and bindings on the real broker, slow clients, and broker connection loss."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import subprocess

import aio_pika
import aiohttp
import aiormq
import pytest

from db.repository import Repository
from harness.progress import ProgressPublisher, finish, seed_batch
from harness.subscribers import stream_url, subscribe
from photoenhance.contracts.progress import progress_routing_key
from photoenhance.settings import Settings
from photoenhance.topology import declare_progress_exchange
from tests.notifier.conftest import RunningNotifier, StartNotifier

WAIT_S = 60


async def routable(settings: Settings, batch_id: str) -> bool:
    """Whether a mandatory publish for ``batch_id`` reaches any queue (i.e. a binding exists)."""
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await declare_progress_exchange(channel, settings)
        try:
            await exchange.publish(
                aio_pika.Message(b"probe"), routing_key=progress_routing_key(batch_id), mandatory=True
            )
        except aio_pika.exceptions.DeliveryError:
            return False
        return True
    finally:
        await connection.close()


async def wait_until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll an async condition until it holds (or fail after WAIT_S)."""
    async def loop() -> None:
        while not await condition():
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(loop(), WAIT_S)
    except TimeoutError:
        pytest.fail(f"never happened: {what}")


async def test_a_batch_is_bound_while_it_has_subscribers(
    settings: Settings, repository: Repository, notifier: RunningNotifier, http: aiohttp.ClientSession
) -> None:
    batch = await seed_batch(repository, "bind", 1)
    assert not await routable(settings, "bind")
    url = stream_url(notifier.base_url, "ws", "bind", token=batch.token)
    async with http.ws_connect(url) as first, http.ws_connect(url) as second:
        # The snapshot is read after the binding is made, so receiving it proves the binding.
        assert (await first.receive_json(timeout=WAIT_S))["kind"] == "snapshot"
        assert (await second.receive_json(timeout=WAIT_S))["kind"] == "snapshot"
        assert await routable(settings, "bind")
        assert notifier.metric("notifier_bound_batches") == 1
        assert not await routable(settings, "another")
        await first.close()
        await wait_until(lambda: _count(notifier, "bind", 1), "first subscriber released")
        assert await routable(settings, "bind")
    await wait_until(lambda: _not_routable(settings, "bind"), "binding removed after the last subscriber left")
    assert notifier.metric("notifier_bound_batches") == 0
    assert notifier.metric("notifier_connections", transport="ws") == 0


async def _count(notifier: RunningNotifier, batch_id: str, n: int) -> bool:
    return notifier.hub.subscriber_count(batch_id) == n


async def _not_routable(settings: Settings, batch_id: str) -> bool:
    return not await routable(settings, batch_id)


async def test_each_notifier_has_its_own_exclusive_auto_delete_queue(
    settings: Settings, start_notifier: StartNotifier
) -> None:
    one, two = await start_notifier(), await start_notifier()
    assert one.hub.queue_name != two.hub.queue_name
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        with pytest.raises(aiormq.exceptions.ChannelLockedResource):
            await channel.declare_queue(one.hub.queue_name, passive=True)
        await one.runner.cleanup()
        channel = await connection.channel()
        with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
            await channel.declare_queue(one.hub.queue_name, passive=True)
    finally:
        await connection.close()


# -- a client that stops reading -------------------------------------------------------------


def _raw_websocket(port: int, path: str) -> socket.socket:
    """A WebSocket handshake on a plain socket with a tiny receive buffer, which we then leave unread."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _read_frames(sock: socket.socket) -> list[tuple[int, bytes]]:
    """Read server frames (opcode, payload) until a close frame or EOF."""
    sock.settimeout(WAIT_S)
    stream = sock.makefile("rb")
    frames = []
    while True:
        head = stream.read(2)
        if len(head) < 2:
            return frames
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", stream.read(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", stream.read(8))[0]
        frames.append((opcode, stream.read(length)))
        if opcode == 0x8:
            return frames


async def test_a_client_too_far_behind_is_closed_with_4008_and_resumes_with_since(
    settings: Settings, repository: Repository, start_notifier: StartNotifier, http: aiohttp.ClientSession
) -> None:
    notifier = await start_notifier(ws_send_queue_max=5)
    images = 80
    batch = await seed_batch(repository, "slow", images)
    port = int(notifier.base_url.rsplit(":", 1)[1])
    sock = await asyncio.to_thread(_raw_websocket, port, f"/ws/batches/slow?token={batch.token}")
    try:
        await wait_until(lambda: _count(notifier, "slow", 1), "raw client subscribed")
        # ~100 kB per event: far more than the socket buffers hold, so the notifier's writes block
        # and the inbox (5 events) overflows.
        async with ProgressPublisher(settings) as publisher:
            for image_id in batch.image_ids:
                await publisher.publish(await finish(repository, image_id, report={"pad": "x" * 100_000}))
                if notifier.metric("notifier_slow_closes_total", transport="ws"):
                    break
        await wait_until(
            lambda: _true(notifier.metric("notifier_slow_closes_total", transport="ws") == 1), "slow close"
        )
        frames = await asyncio.to_thread(_read_frames, sock)
    finally:
        sock.close()
    texts = [json.loads(payload) for opcode, payload in frames if opcode == 0x1]
    assert texts[0]["kind"] == "snapshot"
    got = [m["seq"] for m in texts if m["kind"] == "event"]
    assert got == list(range(1, len(got) + 1))
    assert frames[-1][0] == 0x8, "the stream ends with a close frame"
    code = struct.unpack("!H", frames[-1][1][:2])[0]
    assert code == 4008
    assert b"since" in frames[-1][1]

    # Finish the rest unpublished-to-anyone, then resume: everything after the last seq, once.
    async with ProgressPublisher(settings) as publisher:
        for image_id in batch.image_ids:
            image = await repository.get_image(image_id)
            if image is not None and image.state.value == "pending":
                await publisher.publish(await finish(repository, image_id))
    url = stream_url(notifier.base_url, "ws", "slow", token=batch.token, since=got[-1] if got else 0)
    resumed = await asyncio.wait_for(await subscribe(http, url), WAIT_S)
    assert got + resumed.seqs == list(range(1, images + 2))
    assert resumed.close_code == 1000


async def _true(value: bool) -> bool:
    return value


# -- the broker connection drops -------------------------------------------------------------


def _close_broker_connection(connection_name: str) -> None:
    """Have RabbitMQ close the connection whose client named itself ``connection_name``."""
    # The plain listing gives full pids ("<rabbit@host.N.N.N>"), which close_connection accepts;
    # the JSON one abbreviates them.
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
        check=True, capture_output=True, text=True, timeout=WAIT_S,
    )
    for line in listing.stdout.splitlines():
        if connection_name in line:
            pid = line.split("\t", 1)[0]
            subprocess.run(
                ["rabbitmqctl", "-q", "close_connection", pid, "test: simulated outage"],
                check=True, capture_output=True, timeout=WAIT_S,
            )
            return
    pytest.fail(f"no broker connection named {connection_name}")


@pytest.mark.reliability
async def test_events_published_while_the_broker_connection_is_down_are_caught_up(
    settings: Settings, repository: Repository, start_notifier: StartNotifier, http: aiohttp.ClientSession
) -> None:
    try:
        subprocess.run(["rabbitmqctl", "-q", "status"], check=True, capture_output=True, timeout=WAIT_S)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("rabbitmqctl cannot reach the local broker")
    # A long pause before reconnecting leaves room to publish while the notifier is away.
    notifier = await start_notifier(hub_options={"reconnect_interval_s": 5.0})
    batch = await seed_batch(repository, "outage", 6)
    client = await subscribe(http, stream_url(notifier.base_url, "ws", "outage", token=batch.token))
    async with ProgressPublisher(settings) as publisher:
        await publisher.finish_all(repository, batch.image_ids[:2])
        await asyncio.to_thread(_close_broker_connection, notifier.hub.queue_name)
        # The notifier's queue went with its connection: these are published to nobody.
        await publisher.finish_all(repository, batch.image_ids[2:4])
        assert not notifier.hub.connected, "premise: those were published while the notifier was away"
        await wait_until(lambda: _true(notifier.hub.connected), "hub reconnected")
        await wait_until(
            lambda: _true(notifier.metric("notifier_catch_ups_total", reason="reconnect") >= 1), "catch-up"
        )
        # After the reconnect live events flow again (the binding was restored).
        await publisher.finish_all(repository, batch.image_ids[4:])
    received = await asyncio.wait_for(client, WAIT_S)
    assert received.seqs == [1, 2, 3, 4, 5, 6, 7]
    assert received.close_code == 1000
    # Events 3 and 4 can only have come from the database.
    assert notifier.metric("notifier_events_sent_total", transport="ws", source="replay") >= 2
    assert notifier.metric("notifier_events_sent_total", transport="ws", source="live") >= 2
