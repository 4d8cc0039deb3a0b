"""``GET /ws/batches/{batch_id}``: a batch's progress stream over WebSocket.

Query: ``token`` (or an ``Authorization: Bearer`` header) and optionally ``since=<seq>``. A refused
request is answered before the upgrade with HTTP 404 ``batch_not_found``. Messages and close codes
are described in :mod:`photoenhance.contracts.progress_stream`; messages from the client are read
(so pings, pongs and close frames are handled) and otherwise ignored.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import WSMsgType, web

from notifier.context import CONTEXT
from notifier.stream import ClientGone, Outcome, Outgoing, send_or_gone
from photoenhance.contracts.progress_stream import CloseCode

__all__ = ["handle_ws"]

log = logging.getLogger(__name__)

#: Largest message accepted from a client (it has nothing to say beyond control frames).
MAX_CLIENT_MESSAGE_BYTES = 4096

#: How long a closing handshake may take before the connection is simply dropped; a client too
#: slow to read its events is usually too slow to read the close frame behind them.
CLOSE_TIMEOUT_S = 5.0

#: Close code and reason for each way a stream ends (a client that left needs none).
_CLOSE: dict[Outcome, tuple[CloseCode, str]] = {
    Outcome.COMPLETED: (CloseCode.NORMAL, "batch completed"),
    Outcome.TOO_SLOW: (CloseCode.TOO_SLOW, "too slow: reconnect with since=<last seq received>"),
    Outcome.SHUTDOWN: (CloseCode.GOING_AWAY, "server shutting down: reconnect with since"),
    Outcome.ERROR: (CloseCode.INTERNAL_ERROR, "internal error: reconnect with since"),
    Outcome.CLIENT_GONE: (CloseCode.NORMAL, ""),
}


class _WebSocketSink:
    """Writes stream messages as text frames."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws

    async def send(self, message: Outgoing) -> None:
        if self._ws.closed:
            raise ClientGone("websocket closed")
        # Already UTF-8 JSON: sent as a text frame without encoding it again per client.
        await send_or_gone(lambda: self._ws.send_frame(message.data, WSMsgType.TEXT))


async def _until_client_closes(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the client sends until it closes."""
    async for msg in ws:
        if msg.type is WSMsgType.ERROR:
            return


async def handle_ws(request: web.Request) -> web.StreamResponse:
    """Authorise, upgrade, then stream until the batch completes or the client leaves."""
    ctx = request.app[CONTEXT]
    admitted = await ctx.admit(request, "ws", request.query.get("since"))
    if isinstance(admitted, web.Response):
        return admitted
    batch, since = admitted
    ws = web.WebSocketResponse(heartbeat=ctx.settings.ws_heartbeat_s, max_msg_size=MAX_CLIENT_MESSAGE_BYTES)
    if not ws.can_prepare(request).ok:
        return web.json_response({"code": "websocket_required", "message": "Connect with WebSocket."}, status=400)
    await ws.prepare(request)
    with ctx.connection("ws", since):
        outcome = await ctx.stream("ws", batch, since, _WebSocketSink(ws), _until_client_closes(ws))
        code, reason = _CLOSE[outcome]
        await _close(request, ws, code, reason)
    return ws


async def _close(request: web.Request, ws: web.WebSocketResponse, code: CloseCode, reason: str) -> None:
    try:
        await asyncio.wait_for(ws.close(code=code, message=reason.encode()), CLOSE_TIMEOUT_S)
    except (TimeoutError, ConnectionError):
        if request.transport is not None:
            request.transport.abort()
