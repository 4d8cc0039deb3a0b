"""Every bad subscription gets exactly the answer an unknown batch gets, on both transports."""

from __future__ import annotations

import base64
import os

import aiohttp
import pytest

from db.connection import Database
from db.repository import Repository
from harness.progress import finish, seed_batch
from harness.subscribers import stream_url
from tests.notifier.conftest import RunningNotifier, StartNotifier


def upgrade_headers() -> dict[str, str]:
    """A WebSocket handshake's request headers."""
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }


async def answer(
    http: aiohttp.ClientSession, url: str, *, websocket: bool, headers: dict[str, str] | None = None
) -> tuple[int, str, bytes]:
    """Status, content type and body of the first response (not following any stream)."""
    all_headers = {**(upgrade_headers() if websocket else {}), **(headers or {})}
    async with http.get(url, headers=all_headers) as resp:
        if resp.status in (101, 200):
            return resp.status, resp.headers.get("Content-Type", ""), b""
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_bad_input_is_answered_like_an_unknown_batch(
    transport: str, repository: Repository, notifier: RunningNotifier, http: aiohttp.ClientSession
) -> None:
    mine = await seed_batch(repository, "mine", 2)
    other = await seed_batch(repository, "other", 1)
    await finish(repository, mine.image_ids[0])  # last_seq is 1
    base, ws = notifier.base_url, transport == "ws"

    unknown = await answer(http, stream_url(base, transport, "nobatch", token=mine.token), websocket=ws)
    assert unknown[0] == 404 and unknown[1].startswith("application/json")
    assert b'"code": "batch_not_found"' in unknown[2]

    cases = {
        "no token": stream_url(base, transport, "mine"),
        "wrong token": stream_url(base, transport, "mine", token="x" * 43),
        "another batch's token": stream_url(base, transport, "mine", token=other.token),
        "empty token": stream_url(base, transport, "mine", token=""),
        "since not a number": stream_url(base, transport, "mine", token=mine.token, since="abc"),
        "negative since": stream_url(base, transport, "mine", token=mine.token, since="-1"),
        "fractional since": stream_url(base, transport, "mine", token=mine.token, since="1.5"),
        "empty since": stream_url(base, transport, "mine", token=mine.token, since=""),
        "padded since": stream_url(base, transport, "mine", token=mine.token, since=" 1"),
        "huge since": stream_url(base, transport, "mine", token=mine.token, since="9" * 40),
        "since past the last event": stream_url(base, transport, "mine", token=mine.token, since=2),
        "malformed batch id": stream_url(base, transport, "..%2F..", token=mine.token),
        "batch id too long": stream_url(base, transport, "a" * 65, token=mine.token),
    }
    for case, url in cases.items():
        assert await answer(http, url, websocket=ws) == unknown, case
    wrong_header = {"Authorization": f"Bearer {other.token}"}
    assert await answer(http, stream_url(base, transport, "mine"), websocket=ws, headers=wrong_header) == unknown
    if transport == "sse":
        url = stream_url(base, transport, "mine", token=mine.token)
        assert await answer(http, url, websocket=False, headers={"Last-Event-ID": "zz"}) == unknown

    refused = len(cases) + 2 + (1 if transport == "sse" else 0)
    assert notifier.metric("notifier_refused_total", transport=transport) == refused
    # A refusal subscribes to nothing.
    assert notifier.hub.subscriber_count("mine") == 0
    assert notifier.metric("notifier_bound_batches") == 0


@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_token_in_header_query_or_an_api_key_opens_the_batch(
    transport: str, repository: Repository, start_notifier: StartNotifier, http: aiohttp.ClientSession
) -> None:
    notifier = await start_notifier(api_keys=("service-key-1",))
    batch = await seed_batch(repository, "open", 1)
    ok = 101 if transport == "ws" else 200
    ws = transport == "ws"
    base = notifier.base_url
    assert (await answer(http, stream_url(base, transport, "open", token=batch.token), websocket=ws))[0] == ok
    header = {"Authorization": f"Bearer {batch.token}"}
    assert (await answer(http, stream_url(base, transport, "open"), websocket=ws, headers=header))[0] == ok
    assert (await answer(http, stream_url(base, transport, "open", token="service-key-1"), websocket=ws))[0] == ok
    assert (await answer(http, stream_url(base, transport, "open", token=batch.token, since=0), websocket=ws))[0] == ok
    # An API key is no master key for batches that do not exist.
    missing = await answer(http, stream_url(base, transport, "nobatch", token="service-key-1"), websocket=ws)
    assert missing[0] == 404


@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_an_unreachable_database_is_a_json_503_for_every_batch(
    transport: str, start_notifier: StartNotifier, http: aiohttp.ClientSession
) -> None:
    unreachable = Database("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere")
    try:
        notifier = await start_notifier(repository=Repository(unreachable))
        for batch_id in ("any", "other"):
            status, content_type, body = await answer(
                http, stream_url(notifier.base_url, transport, batch_id, token="t"), websocket=transport == "ws"
            )
            assert (status, content_type.split(";")[0]) == (503, "application/json")
            assert b'"code": "unavailable"' in body
    finally:
        await unreachable.dispose()
