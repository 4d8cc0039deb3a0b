"""One message from the work queue: parse it, run each record through the pipeline, settle it.

- a body that is not a bucket notification, or a key outside any batch prefix (``photo.jpg`` at
  the bucket's root, ``bad id!/x.jpg``): rejected without requeue, so the
  quorum queue dead-letters it at once (the dead-letter queue keeps it for people to look at);
- a manifest that cannot be used: dead-lettered the same way (the log says why);
- a well-formed event of something other than new content (a delete, a tag): acknowledged;
- a key refused by the contract but inside a batch (``../``, empty segments): recorded against the
  batch as a failed image with the reason, acknowledged;
- otherwise every record gets an :class:`~processor.pipeline.Outcome`, then the message is
  acknowledged. That is after the result object and the row are durable (the pipeline returns
  only then), or after a retry copy is confirmed by the broker.

If the pipeline raises (the broker or database is away even for scheduling a retry), the message is
returned to the queue after a pause and comes back, which the quorum queue's delivery limit bounds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from photoenhance.contracts.events import (
    IgnoredEvent,
    InvalidKey,
    NotificationError,
    ObjectCreated,
    parse_notification,
)
from photoenhance.contracts.options import Quality
from processor.batches import Batches
from processor.manifest import ManifestError
from processor.metrics import ProcessorMetrics
from processor.pipeline import Attempt, ImagePipeline
from processor.publisher import ATTEMPT_HEADER, DEFERRAL_HEADER, LEVEL_HEADER, Publisher
from processor.timeline import utc_now

__all__ = ["MessageHandler", "attempt_of"]

log = logging.getLogger(__name__)

#: Takes one announced object to an outcome (raises only when even a retry cannot be scheduled).
Settle = Callable[[ObjectCreated, Attempt], Awaitable[Any]]

#: Pause before a message the pipeline could not settle goes back to the queue.
REQUEUE_PAUSE_S = 1.0


def attempt_of(message: AbstractIncomingMessage, received_at: datetime | None = None) -> Attempt:
    """The retry counters a message carries in its headers (0 for a first announcement), with
    the moment this delivery reached the worker."""
    headers = message.headers or {}

    def count(name: str) -> int:
        value = headers.get(name, 0)
        return value if isinstance(value, int) and value >= 0 else 0

    level = headers.get(LEVEL_HEADER)
    if isinstance(level, bytes):
        level = level.decode(errors="replace")
    valid = isinstance(level, str) and level in {q.value for q in Quality}
    return Attempt(
        failures=count(ATTEMPT_HEADER), deferrals=count(DEFERRAL_HEADER), received_at=received_at,
        level=level if valid else None,
    )


class MessageHandler:
    """Settles work-queue messages through an :class:`ImagePipeline`."""

    def __init__(
        self,
        pipeline: ImagePipeline,
        *,
        batches: Batches,
        publisher: Publisher,
        metrics: ProcessorMetrics,
        settle: Settle | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.batches = batches
        self.publisher = publisher
        self.metrics = metrics
        #: What each object record of a message goes through: the pipeline, or the router.
        self._settle: Settle = settle or pipeline.process

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        # The delivery's arrival, taken first: the image's timeline starts here (processor.timeline).
        received_at = utc_now()
        self.metrics.in_flight.inc()
        try:
            outcome = await self._handle(message, received_at)
            self.metrics.messages.labels(outcome).inc()
        finally:
            self.metrics.in_flight.dec()

    async def _handle(self, message: AbstractIncomingMessage, received_at: datetime) -> str:
        try:
            records = parse_notification(message.body)
        except IgnoredEvent as exc:
            log.debug("ignored: %s", exc)
            await message.ack()
            return "ignored"
        except InvalidKey as exc:
            if exc.batch_id is None or "/" not in exc.key:  # outside any batch prefix: names no image
                return await self._dead_letter(message, exc)
            try:
                await self.publisher.progress(await self.batches.refuse_key(exc))
            except Exception as failure:
                return await self._requeue(message, failure)
            self.metrics.failed.labels(exc.code).inc()
            await message.ack()
            return "refused_key"
        except NotificationError as exc:
            return await self._dead_letter(message, exc)
        attempt = attempt_of(message, received_at)
        try:
            outcomes = await asyncio.gather(*(self._settle(r, attempt) for r in records))
        except ManifestError as exc:  # an unusable manifest: nothing to retry, people must look at it
            return await self._dead_letter(message, exc)
        except asyncio.CancelledError:
            raise  # shutdown: unacknowledged, so the broker redelivers it
        except Exception as exc:
            return await self._requeue(message, exc)
        await message.ack()
        return str(getattr(outcomes[0], "value", outcomes[0])) if len(outcomes) == 1 else "multi"

    async def _dead_letter(self, message: AbstractIncomingMessage, why: Exception) -> str:
        log.warning("dead-lettering message %s: %s", message.message_id or message.delivery_tag, why)
        await message.reject(requeue=False)
        return "dead_lettered"

    async def _requeue(self, message: AbstractIncomingMessage, why: Exception) -> str:
        log.warning("could not settle message %s, it goes back to the queue: %r", message.delivery_tag, why)
        await asyncio.sleep(REQUEUE_PAUSE_S)
        try:
            await message.nack(requeue=True)
        except Exception as exc:  # the channel is gone: the broker requeues it by itself
            log.debug("nack failed: %r", exc)
        return "requeued"

