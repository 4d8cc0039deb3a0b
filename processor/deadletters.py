"""Poison messages: what the worker does with messages the work queue dead-lettered.

The work queue dead-letters a message past ``AMQP_DELIVERY_LIMIT`` deliveries (its workers crashed
or were stopped on it every time) or when it is rejected (a body that names no image, or an image
whose retries ran out while the database was away). The fanout dead-letter exchange gives a copy to
the dead-letter queue, which keeps it for people, and one to the worker's watch queue, handled
here: if the body names an image, that image is marked failed with a reason (``delivery_limit`` or
``retries_exhausted``), so the batch can complete; anything else is only acknowledged.

An image that a worker holds under a live lease is not failed: a duplicate announcement of it may
have died while another delivery is being processed normally. The dead letter waits (requeued
every ``RETRY_PAUSE_S``) until that worker finishes it, or its lease runs out (it crashed), and
only then fails what is still unfinished.
"""

from __future__ import annotations

import asyncio
import logging

from aio_pika.abc import AbstractIncomingMessage

from db.records import ImageVersion
from db.repository import Repository
from photoenhance.contracts.events import NotificationError, ObjectCreated, parse_notification
from photoenhance.contracts.failures import FailureCode
from photoenhance.contracts.states import ImageState
from processor.batches import Batches
from processor.metrics import ProcessorMetrics
from processor.publisher import Publisher

__all__ = ["DeadLetterWatch"]

log = logging.getLogger(__name__)


class _StillLeased(Exception):
    """A worker's lease on the image still runs: decide again later."""

#: Pause before a dead letter that could not be recorded is tried again.
RETRY_PAUSE_S = 2.0


def death_reason(message: AbstractIncomingMessage) -> str:
    """RabbitMQ's reason for the (latest) dead-lettering: ``delivery_limit``, ``rejected``, ``expired``..."""
    deaths = (message.headers or {}).get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        reason = deaths[0].get("reason")
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace")
        if isinstance(reason, str):
            return reason
    return "unknown"


class DeadLetterWatch:
    """Marks the images of dead-lettered messages failed."""

    def __init__(
        self,
        dead_letter_queue: str,
        *,
        repository: Repository,
        batches: Batches,
        publisher: Publisher,
        metrics: ProcessorMetrics,
    ) -> None:
        self.dead_letter_queue = dead_letter_queue
        self.repository = repository
        self.batches = batches
        self.publisher = publisher
        self.metrics = metrics

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        try:
            records = parse_notification(message.body)
        except NotificationError:
            await message.ack()  # names no image: the dead-letter queue's copy is all there is to keep
            return
        reason = death_reason(message)
        try:
            for record in records:
                await self._fail(record, reason)
        except _StillLeased as exc:
            log.info("dead letter (%s) waits: %s", reason, exc)
            await asyncio.sleep(RETRY_PAUSE_S)
            await message.nack(requeue=True)
            return
        except Exception as exc:
            log.warning("could not record a dead letter (%s), trying again: %r", reason, exc)
            await asyncio.sleep(RETRY_PAUSE_S)
            await message.nack(requeue=True)
            return
        await message.ack()

    async def _fail(self, record: ObjectCreated, reason: str) -> None:
        if record.is_manifest:
            return
        repository = self.repository
        image = await repository.find_image(record.bucket, record.key, record.etag)
        if image is None:
            await self.batches.ensure(record.batch_id, record.bucket)
            image = (await repository.register_image(ImageVersion.of(record))).image
        if reason == "delivery_limit":
            code = FailureCode.DELIVERY_LIMIT
            text = (
                "processing was cut off on every delivery (the worker crashed or was stopped each time); "
                f"the message is kept in the dead-letter queue {self.dead_letter_queue}"
            )
        else:
            code = FailureCode.RETRIES_EXHAUSTED
            text = f"the message was dead-lettered ({reason}); it is kept in {self.dead_letter_queue}"
        events = await repository.fail_image(image.id, reason=text, code=code, spare_live_lease=True)
        if not events:
            current = await repository.get_image(image.id)
            if current is not None and current.state is ImageState.PROCESSING:
                raise _StillLeased(f"{record.key} is held by {current.lease_owner} until {current.lease_expires_at}")
        if events:
            log.warning("%s/%s marked failed: %s", record.bucket, record.key, code)
            self.metrics.failed.labels(code).inc()
            await self.publisher.progress(events)
