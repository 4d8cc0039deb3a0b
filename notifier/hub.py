"""Per-process fan-out of live progress events, and the AMQP bindings that feed it.

Each notifier process owns one exclusive, auto-delete queue on the progress exchange (so it
disappears with the process, and every replica gets its own copy of each event). A batch is bound
to that queue when its first local subscriber arrives and unbound when its last one leaves, so a
replica receives only the events its own clients need.

Each event is decoded and encoded once per process, then handed to every subscriber's
:class:`~notifier.stream.Inbox` without waiting: a slow subscriber never delays the others.

Broker outages: the robust connection re-declares the queue, its bindings and its consumer when it
comes back; events published while it was away are gone, so every subscriber is then told to read
the database for what it missed (``CATCH_UP``). Batches whose binding failed during the outage are
bound again first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from notifier.metrics import NotifierMetrics
from notifier.stream import CATCH_UP, Inbox, LiveEvent
from photoenhance.contracts.progress import ProgressEvent, ProgressEventError, progress_routing_key
from photoenhance.settings import Settings
from photoenhance.topology import declare_progress_exchange

__all__ = ["Hub"]

log = logging.getLogger(__name__)

#: Seconds between reconnection attempts after the broker connection drops.
RECONNECT_INTERVAL_S = 1.0


@dataclass(eq=False)
class _Topic:
    """One batch's local subscribers and whether its binding exists."""

    subscribers: set[Inbox] = field(default_factory=set)
    bound: bool = False
    #: Serialises bind and unbind of this batch, so a subscriber arriving while the last one
    #: leaves never ends up without a binding.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Hub:
    """This process's progress-exchange queue and the subscribers of each batch.

    ``settings`` gives the broker URL and exchange; ``metrics`` counts bound batches and catch-ups;
    ``queue_name`` defaults to a unique ``notifier.<host>.<pid>.<random>``;
    ``reconnect_interval_s`` is the pause between reconnection attempts.
    """

    def __init__(
        self,
        settings: Settings,
        metrics: NotifierMetrics,
        *,
        queue_name: str | None = None,
        reconnect_interval_s: float = RECONNECT_INTERVAL_S,
    ) -> None:
        self.settings = settings
        self.reconnect_interval_s = reconnect_interval_s
        self.metrics = metrics
        self.queue_name = queue_name or f"notifier.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self._topics: dict[str, _Topic] = {}
        self._connection: AbstractRobustConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._queue: AbstractQueue | None = None

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, declare the exchange and this process's queue, and start consuming."""
        connection = await aio_pika.connect_robust(
            self.settings.amqp_url,
            reconnect_interval=self.reconnect_interval_s,
            client_properties={"connection_name": self.queue_name},
        )
        self._connection = connection
        connection.reconnect_callbacks.add(self._on_reconnect)
        channel = await connection.channel()
        self._exchange = await declare_progress_exchange(channel, self.settings)
        self._queue = await channel.declare_queue(self.queue_name, exclusive=True, auto_delete=True)
        # no_ack: the database, not the broker, guarantees delivery; a message lost here is
        # found by the next gap or reconnect catch-up.
        await self._queue.consume(self._on_message, no_ack=True)

    async def close(self) -> None:
        """Close the connection (the broker then deletes the queue)."""
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up right now."""
        return self._connection is not None and not self._connection.is_closed and self._connection.connected.is_set()

    # -- subscriptions ------------------------------------------------------------------------

    @asynccontextmanager
    async def subscribe(self, batch_id: str, maxsize: int) -> AsyncIterator[Inbox]:
        """Receive ``batch_id``'s live events in a new inbox of ``maxsize`` while inside the block.

        On entry the binding exists (unless the broker is down, in which case it is made when
        the broker returns, followed by a catch-up), so anything published afterwards arrives.
        """
        inbox = Inbox(maxsize)
        # Registered before the first await, so the topic cannot be dropped under us.
        topic = self._topics.setdefault(batch_id, _Topic())
        topic.subscribers.add(inbox)
        try:
            await self._ensure_bound(batch_id, topic)
            yield inbox
        finally:
            topic.subscribers.discard(inbox)
            await asyncio.shield(self._release(batch_id, topic))

    def subscriber_count(self, batch_id: str) -> int:
        """How many local subscribers ``batch_id`` has."""
        topic = self._topics.get(batch_id)
        return 0 if topic is None else len(topic.subscribers)

    async def _ensure_bound(self, batch_id: str, topic: _Topic) -> None:
        async with topic.lock:
            if topic.bound or self._queue is None or self._exchange is None:
                return
            try:
                await self._queue.bind(self._exchange, routing_key=progress_routing_key(batch_id))
            except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
                # The subscriber still gets its replay; live events follow the reconnect.
                log.warning("could not bind batch %s (broker down?): %s", batch_id, exc)
                return
            topic.bound = True
            self.metrics.bound_batches.inc()

    async def _release(self, batch_id: str, topic: _Topic) -> None:
        async with topic.lock:
            if topic.subscribers:
                return
            if topic.bound and self._queue is not None and self._exchange is not None:
                try:
                    await self._queue.unbind(self._exchange, routing_key=progress_routing_key(batch_id))
                except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
                    # A stale binding only brings events nobody here wants; they are dropped.
                    log.warning("could not unbind batch %s: %s", batch_id, exc)
                topic.bound = False
                self.metrics.bound_batches.dec()
            # Checked again after the await: a new subscriber may have joined meanwhile.
            if not topic.subscribers and not topic.bound and self._topics.get(batch_id) is topic:
                del self._topics[batch_id]

    # -- events -------------------------------------------------------------------------------

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # No await in here: aio-pika runs each delivery as a task in arrival order, and a body
        # that never yields keeps each batch's events in that order.
        try:
            event = ProgressEvent.from_json(message.body)
        except ProgressEventError as exc:
            log.warning("dropping unreadable progress message (%s): %s", message.routing_key, exc)
            return
        self.dispatch(event)

    def dispatch(self, event: ProgressEvent) -> int:
        """Hand ``event`` to every local subscriber of its batch; returns how many got it."""
        topic = self._topics.get(event.batch_id)
        if topic is None or not topic.subscribers:
            return 0
        live = LiveEvent.of(event)
        subscribers = tuple(topic.subscribers)
        for inbox in subscribers:
            inbox.deliver(live)
        return len(subscribers)

    async def _on_reconnect(self, *_: Any) -> None:
        """After the robust connection restored the queue: bind what failed, then catch up."""
        log.info("progress exchange connection restored; catching subscribers up from the database")
        for batch_id, topic in list(self._topics.items()):
            await self._ensure_bound(batch_id, topic)
        for topic in list(self._topics.values()):
            for inbox in tuple(topic.subscribers):
                inbox.deliver(CATCH_UP)
