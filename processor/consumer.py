"""The thin aio-pika loop: deliveries become tasks, tracked so shutdown can wait for them.

``prefetch_count`` (``PREFETCH``) is the worker's in-flight window: the broker never hands it more
unacknowledged messages than that. Each delivery runs as its own task, so images of one window are
fetched, decoded and micro-batched together. The connection is ``connect_robust``: after a broker
restart it reconnects, re-declares and consumes again by itself; messages that were in flight
are redelivered by the broker (their acks cannot reach it), and the pipeline's idempotency takes
care of the duplicates. Knows nothing of images, retries or metrics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

__all__ = ["Consumer", "SharedWindow"]

log = logging.getLogger(__name__)

Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]


class Consumer:
    """Consumes one queue with ``handler``, one task per message."""

    def __init__(self, queue: AbstractQueue, handler: Handler, name: str) -> None:
        self._queue = queue
        self._handler = handler
        self._name = name
        self._tag: str | None = None
        self._stopped = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    @property
    def consuming(self) -> bool:
        return self._tag is not None

    async def start(self) -> None:
        self._tag = await self._queue.consume(self._dispatch)

    async def _dispatch(self, message: AbstractIncomingMessage) -> None:
        if self._stopped:
            # Delivered before the broker took the cancel in: left unacknowledged, it goes back to
            # the queue when the channel closes. Started now, it would escape the drain.
            return
        task = asyncio.create_task(self._run(message), name=f"{self._name}-{message.delivery_tag}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, message: AbstractIncomingMessage) -> None:
        try:
            await self._handler(message)
        except asyncio.CancelledError:
            raise
        except Exception:  # a handler bug must not kill the consumer; the broker redelivers the message
            log.exception("%s: unhandled error on message %s", self._name, message.delivery_tag)

    async def stop(self) -> None:
        """Stop receiving new deliveries (in-flight ones go on)."""
        self._stopped = True
        if self._tag is None:
            return
        tag, self._tag = self._tag, None
        try:
            await self._queue.cancel(tag)
        except Exception as exc:  # the channel is already closed: nothing more will arrive anyway
            log.debug("%s: cancel failed: %r", self._name, exc)

    async def drain(self, grace_s: float, hurry: asyncio.Event | None = None) -> int:
        """Wait up to ``grace_s`` (or until ``hurry`` is set) for in-flight tasks; cancel the rest.

        Returns how many were cancelled (left unacknowledged, for redelivery).
        """
        pending = set(self._tasks)
        if not pending:
            return 0
        waiters: set[asyncio.Future[object]] = {asyncio.ensure_future(asyncio.wait(pending, timeout=grace_s))}
        hurry_task = asyncio.ensure_future(hurry.wait()) if hurry is not None else None
        if hurry_task is not None:
            waiters.add(hurry_task)
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        left = [t for t in pending if not t.done()]
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left)
            log.warning("%s: %d message(s) left for redelivery after the shutdown grace", self._name, len(left))
        return len(left)


class SharedWindow:
    """At most ``size`` handlers at once across every consumer whose handler it wraps.

    Why: a worker serving several levels consumes several quorum queues, and RabbitMQ refuses a
    channel-wide prefetch on quorum queues. Each consumer's prefetch is the whole window (an idle
    worker fills it from any level); deliveries beyond the window wait here, unacknowledged.
    """

    def __init__(self, size: int) -> None:
        self._gate = asyncio.Semaphore(max(size, 1))

    def wrap(self, handler: Handler) -> Handler:
        """``handler``, run only when the window has room."""

        async def windowed(message: AbstractIncomingMessage) -> None:
            async with self._gate:
                await handler(message)

        return windowed
