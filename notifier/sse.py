"""``GET /events/batches/{batch_id}``: the same progress stream as Server-Sent Events.

For ``curl -N`` and browsers' ``EventSource``. Query: ``token`` (or an ``Authorization: Bearer``
header) and optionally ``since=<seq>``; a ``Last-Event-ID`` header (what EventSource sends when it
reconnects) takes precedence over ``since``. Each message is one ``data:`` line holding the same
JSON a WebSocket frame holds; events and snapshots carry ``id: <seq>`` so a reconnect resumes right
after them. Heartbeats are comment lines. On ``end`` the client should close: EventSource would
otherwise reconnect (and be told ``end`` again).

A client that falls too far behind is disconnected without ceremony; EventSource reconnects on its
own with ``Last-Event-ID`` and receives the rest from the database.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from notifier.context import CONTEXT
from notifier.stream import ClientGone, Outcome, Outgoing, send_or_gone
from photoenhance.contracts.progress_stream import MessageKind

__all__ = ["handle_sse"]

#: Milliseconds EventSource waits before reconnecting after the connection drops.
RETRY_MS = 1000

#: How long the final flush may take before the connection is dropped.
CLOSE_TIMEOUT_S = 5.0

_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-store",
    # Tokens travel in the URL, not in cookies, so any page may read the stream it holds a token for.
    "Access-Control-Allow-Origin": "*",
    # Tell nginx-like proxies not to buffer the stream.
    "X-Accel-Buffering": "no",
}


def sse_record(message: Outgoing) -> bytes:
    """One message in the text/event-stream format."""
    if message.kind is MessageKind.HEARTBEAT:
        return b": heartbeat\n\n"
    head = b"" if message.seq is None else b"id: %d\n" % message.seq
    # Compact JSON never contains a raw newline, so one data line holds the whole message.
    return head + b"data: " + message.data + b"\n\n"


class _EventStreamSink:
    """Writes stream messages as SSE records."""

    def __init__(self, response: web.StreamResponse) -> None:
        self._response = response

    async def send(self, message: Outgoing) -> None:
        await send_or_gone(lambda: self._response.write(sse_record(message)))


async def handle_sse(request: web.Request) -> web.StreamResponse:
    """Authorise, then stream until the batch completes or the client leaves."""
    ctx = request.app[CONTEXT]
    since_raw = request.headers.get("Last-Event-ID") or request.query.get("since")
    admitted = await ctx.admit(request, "sse", since_raw)
    if isinstance(admitted, web.Response):
        return admitted
    batch, since = admitted
    response = web.StreamResponse(headers=_HEADERS)
    await response.prepare(request)
    with ctx.connection("sse", since):
        sink = _EventStreamSink(response)
        try:
            await send_or_gone(lambda: response.write(f"retry: {RETRY_MS}\n\n".encode()))
        except ClientGone:
            return response
        outcome = await ctx.stream("sse", batch, since, sink)
    if outcome in (Outcome.TOO_SLOW, Outcome.CLIENT_GONE):
        # Whatever is still buffered would only delay the drop; the client resumes by Last-Event-ID.
        if request.transport is not None:
            request.transport.abort()
        return response
    try:
        await asyncio.wait_for(response.write_eof(), CLOSE_TIMEOUT_S)
    except (TimeoutError, ConnectionError):
        if request.transport is not None:
            request.transport.abort()
    return response
