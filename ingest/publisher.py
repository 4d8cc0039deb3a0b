"""Publishing synthetic bucket notifications (the retry endpoint's re-announcements) and the
progress events the API itself causes (a cancel's ``batch.cancelled``).

The connection is opened on first use, not at start-up, so the ingest API serves batches,
uploads and archives while the broker is down; only a retry needs it, and it answers 503 then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustConnection

from photoenhance.contracts.progress import ProgressEvent, progress_routing_key
from photoenhance.settings import Settings
from photoenhance.topology import declare_topology

__all__ = ["BrokerUnavailable", "EventPublisher"]

log = logging.getLogger(__name__)

#: Seconds to wait for the broker before a publish gives up.
CONNECT_TIMEOUT_S = 10


class BrokerUnavailable(RuntimeError):
    """The broker could not be reached, or did not confirm a message."""


class EventPublisher:
    """Publishes to the events exchange with the events routing key, with publisher confirms."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._connection: AbstractRobustConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._progress: AbstractExchange | None = None
        self._lock = asyncio.Lock()

    async def announce(self, bodies: Sequence[bytes]) -> None:
        """Publish each body persistently; returns once the broker has confirmed every one.

        ``mandatory`` makes an unroutable message (no work queue bound) an error instead of a
        silent drop.
        """
        try:
            exchange = await self._events_exchange()
            for body in bodies:
                await exchange.publish(
                    aio_pika.Message(
                        body,
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=self._settings.amqp_events_routing_key,
                    mandatory=True,
                )
        except (TimeoutError, aio_pika.exceptions.AMQPError, OSError) as exc:
            raise BrokerUnavailable(f"could not publish to {self._settings.amqp_events_exchange}: {exc!r}") from exc

    async def progress(self, events: Sequence[ProgressEvent]) -> None:
        """Publish progress events (a cancel's ``batch.cancelled``) to the progress exchange."""
        if not events:
            return
        try:
            await self._events_exchange()
            assert self._progress is not None
            for event in events:
                await self._progress.publish(
                    aio_pika.Message(
                        event.to_json(),
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=progress_routing_key(event.batch_id),
                )
        except (TimeoutError, aio_pika.exceptions.AMQPError, OSError) as exc:
            raise BrokerUnavailable(f"could not publish to {self._settings.amqp_progress_exchange}: {exc!r}") from exc

    async def close(self) -> None:
        """Close the connection, if one was opened."""
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
            self._exchange = None
            self._progress = None

    async def _events_exchange(self) -> AbstractExchange:
        async with self._lock:
            if self._exchange is None:
                self._connection = await aio_pika.connect_robust(
                    self._settings.amqp_url, timeout=CONNECT_TIMEOUT_S
                )
                channel = await self._connection.channel(publisher_confirms=True)
                # The whole topology, not only the exchange: a re-announcement must find the
                # work queue bound, even on a broker that lost its definitions.
                topology = await declare_topology(channel, self._settings)
                self._exchange, self._progress = topology.events_exchange, topology.progress_exchange
            return self._exchange
