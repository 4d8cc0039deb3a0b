"""The processor's own queues beside the shared topology (:mod:`photoenhance.topology`).

Why they exist:

- **Delay queues** ``<work queue>.retry.<ms>ms``: a transient failure must be retried after a
  back-off without holding a prefetch slot or stalling the consumer, and a requeue (``nack``) would
  come straight back and count against the work queue's delivery limit. So the worker publishes
  the object's notification to a delay queue (classic, durable, ``x-message-ttl`` = its delay)
  whose dead-letter target is the events exchange with the events routing key: when the delay is
  over the notification is back on the work queue, on the one processing path. One queue per
  delay, so a long delay never holds a shorter one back (RabbitMQ expires from the head only).
  Each level has its own set, ``<level queue>.retry.<ms>ms``, dead-lettering by name straight back
  to that level's queue: a retried image keeps its level and is not routed again. The set
  without a level serves what the router itself retries (a manifest, an image failing its options).
- **Dead-letter watch** ``<work queue>.dead-letter-watch``: a second queue on the fanout
  dead-letter exchange. The dead-letter queue keeps every dead message for people to look at; the
  watch queue lets the worker mark the image of a poison message (past the delivery limit) failed.
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue

from photoenhance.contracts.levels import LEVELS_BEST_FIRST
from photoenhance.settings import Settings
from photoenhance.topology import Topology, declare_topology, level_queue_name, level_queue_names
from processor.failures import RetryPolicy

__all__ = ["ProcessorQueues", "dead_letter_watch_name", "declare_processor_queues", "delay_queue_name", "processor_queue_names"]


def delay_queue_name(settings: Settings, delay_ms: int, level: str | None = None) -> str:
    """Name of the delay queue for ``delay_ms`` (of ``level``'s queue, or of the announcements)."""
    base = settings.amqp_work_queue if level is None else level_queue_name(settings, level)
    return f"{base}.retry.{delay_ms}ms"


def dead_letter_watch_name(settings: Settings) -> str:
    """Name of the queue through which the worker hears of dead-lettered messages."""
    return f"{settings.amqp_work_queue}.dead-letter-watch"


def processor_queue_names(settings: Settings) -> list[str]:
    """Every queue :func:`declare_processor_queues` declares beyond the shared topology."""
    policy = RetryPolicy.from_settings(settings)
    levels: list[str | None] = [None, *(q.value for q in LEVELS_BEST_FIRST)]
    return [
        *(delay_queue_name(settings, d, level) for level in levels for d in policy.delays()),
        *level_queue_names(settings),
        dead_letter_watch_name(settings),
    ]


@dataclass(frozen=True)
class ProcessorQueues:
    """The shared topology plus the processor's queues."""

    topology: Topology
    dead_letter_watch: AbstractQueue


async def declare_processor_queues(channel: AbstractChannel, settings: Settings) -> ProcessorQueues:
    """Declare the shared topology, the delay queues and the dead-letter watch (idempotent)."""
    topology = await declare_topology(channel, settings)
    for delay in RetryPolicy.from_settings(settings).delays():
        await channel.declare_queue(
            delay_queue_name(settings, delay),
            durable=True,
            arguments={
                "x-message-ttl": delay,
                "x-dead-letter-exchange": settings.amqp_events_exchange,
                "x-dead-letter-routing-key": settings.amqp_events_routing_key,
            },
        )
        for level in LEVELS_BEST_FIRST:
            await channel.declare_queue(
                delay_queue_name(settings, delay, level.value),
                durable=True,
                arguments={
                    "x-message-ttl": delay,
                    "x-dead-letter-exchange": "",  # the default exchange: routed by queue name
                    "x-dead-letter-routing-key": level_queue_name(settings, level.value),
                },
            )
    watch = await channel.declare_queue(
        dead_letter_watch_name(settings), durable=True, arguments={"x-queue-type": "quorum"}
    )
    await watch.bind(topology.dead_letter_exchange)
    return ProcessorQueues(topology=topology, dead_letter_watch=watch)


def persistent(body: bytes, headers: dict[str, object] | None = None) -> aio_pika.Message:
    """A persistent JSON message."""
    return aio_pika.Message(
        body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, content_type="application/json", headers=headers or {}
    )
