"""A batch's progress stream over the notifier's WebSocket, resumed across every disconnect.

:meth:`Follower.messages` yields the stream's messages (``snapshot``, ``event``, ``end``; see
:mod:`photoenhance.contracts.progress_stream`) plus two of its own, ``{"kind": "connected"}``
and ``{"kind": "disconnected"}``, so the caller can fill gaps from the API meanwhile. It
remembers the last ``seq`` and reconnects with ``since=<seq>`` after a drop, a notifier restart
or a "too slow" close (4008): the notifier replays exactly what was missed, and an event seen
twice is passed on once. It stops after ``end``, or when the caller stops iterating.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from photoenhance.contracts.progress_stream import MessageKind

__all__ = ["CONNECTED", "DISCONNECTED", "Follower"]

#: Messages of the follower's own.
CONNECTED = "connected"
DISCONNECTED = "disconnected"

#: Back-off between reconnects: first, and longest.
FIRST_RECONNECT_S = 0.5
MAX_RECONNECT_S = 10.0


class Follower:
    """Follows one batch; ``credential`` is its token or an API key (sent as a Bearer header)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, credential: str, *, since: int | None = None) -> None:
        self.session = session
        self.url = url
        self.credential = credential
        self.last_seq = since
        self.connected = False
        #: Connections opened so far (the first one included).
        self.connections = 0

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """Stream messages until ``end`` (see the module docstring)."""
        delay = FIRST_RECONNECT_S
        while True:
            params = {} if self.last_seq is None else {"since": str(self.last_seq)}
            try:
                async with self.session.ws_connect(
                    self.url,
                    params=params,
                    headers={"Authorization": f"Bearer {self.credential}"},
                    heartbeat=30,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5),
                ) as ws:
                    self.connected = True
                    self.connections += 1
                    delay = FIRST_RECONNECT_S
                    yield {"kind": CONNECTED}
                    async for frame in ws:
                        if frame.type is not aiohttp.WSMsgType.TEXT:
                            continue
                        message = self._accept(frame.data)
                        if message is None:
                            continue
                        yield message
                        if message.get("kind") == MessageKind.END.value:
                            return
            except (TimeoutError, aiohttp.ClientError, OSError):
                # refused, reset, handshake answered 404 (a direct batch the pipeline has not seen
                # yet) or 5xx: all mean "try again later"
                pass
            if self.connected:
                self.connected = False
                yield {"kind": DISCONNECTED}
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RECONNECT_S)

    def _accept(self, text: str) -> dict[str, Any] | None:
        """The parsed message, or None for one already handled or not understood."""
        try:
            message = json.loads(text)
        except ValueError:
            return None
        if not isinstance(message, dict):
            return None
        kind = message.get("kind")
        if kind == MessageKind.SNAPSHOT.value:
            self.last_seq = message.get("last_seq")
        elif kind == MessageKind.EVENT.value:
            seq = message.get("seq")
            if not isinstance(seq, int):
                return None
            if self.last_seq is not None and seq <= self.last_seq:
                return None
            self.last_seq = seq
        return message
