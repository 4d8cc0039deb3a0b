"""Taps: the benchmark's own queues on the pipeline's exchanges, timing when messages reach the broker.

A tap is an exclusive, auto-deleted queue bound to the same exchange and routing key as the queue
it shadows, so RabbitMQ copies every matching message into it at the moment it routes the
original. Consumed without acknowledgements, its arrival times (``time.time()``) say when:

- the store's bucket notification reached the broker (events exchange, the RGW topic's routing
  key: the same binding as the work queue);
- the processor's progress event reached the broker (progress exchange, ``batch.<id>``), which is
  after the commit and before the notifier sees it.

A tap adds one queue copy per message to the broker's work; it never takes a message from the
pipeline.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from photoenhance.contracts.events import NotificationError, parse_notification
from photoenhance.contracts.progress import EventType, ProgressEvent, progress_routing_key
from photoenhance.settings import Settings

__all__ = ["Taps", "taps"]


@dataclass
class Taps:
    """First arrival at the broker, by image name (the key without the batch prefix)."""

    #: The bucket notification announcing the upload.
    notified: dict[str, float] = field(default_factory=dict)
    #: The image's completed/failed progress event.
    published: dict[str, float] = field(default_factory=dict)
    _raw_events: list[tuple[float, bytes]] = field(default_factory=list)
    _raw_progress: list[tuple[float, bytes]] = field(default_factory=list)

    def resolve(self, batch_id: str) -> None:
        """Parse what arrived (kept raw until now so the taps' callbacks stay cheap)."""
        for arrived, body in self._raw_events:
            try:
                records = parse_notification(body)
            except NotificationError:
                continue  # a delete, a manifest or something else that names no upload
            for record in records:
                if record.batch_id == batch_id:
                    self.notified.setdefault(record.name, arrived)
        for arrived, body in self._raw_progress:
            event = ProgressEvent.from_json(body)
            if event.image is not None and event.type is not EventType.BATCH_COMPLETED:
                self.published.setdefault(event.image.name, arrived)


@asynccontextmanager
async def taps(settings: Settings, batch_id: str) -> AsyncIterator[Taps]:
    """Both taps, bound before the block runs; call :meth:`Taps.resolve` after it."""
    found = Taps()
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        for exchange_name, routing_key, into in (
            (settings.amqp_events_exchange, settings.amqp_events_routing_key, found._raw_events),
            (settings.amqp_progress_exchange, progress_routing_key(batch_id), found._raw_progress),
        ):
            exchange = await channel.get_exchange(exchange_name)  # passive: init declared it
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(exchange, routing_key=routing_key)
            await queue.consume(_recorder(into), no_ack=True)
        yield found
    finally:
        await connection.close()


def _recorder(into: list[tuple[float, bytes]]) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
    async def record(message: AbstractIncomingMessage) -> None:
        into.append((time.time(), message.body))

    return record
