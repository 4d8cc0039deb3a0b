"""The AMQP topology every service agrees on, declared from one place.

- ``AMQP_EVENTS_EXCHANGE`` (durable topic): the object store publishes bucket notifications here
  with routing key ``AMQP_EVENTS_ROUTING_KEY``.
- ``AMQP_WORK_QUEUE`` (durable quorum queue, bound to the events exchange): the announcements.
  Routing workers consume it, resolve each object's quality level and republish it, with
  publisher confirms and before acknowledging, to that level's queue (:mod:`processor.routing`).
- ``<AMQP_WORK_QUEUE>.level.<level>`` (durable quorum queue per level, no binding: published to by
  name): the work. A worker consumes only the queues of the levels it serves, so an image waits
  in its level's queue until such a worker runs; KEDA scales each level on its own queue.
- Past ``AMQP_DELIVERY_LIMIT`` deliveries a message of any of these queues is dead-lettered to
  ``AMQP_DEAD_LETTER_EXCHANGE`` (fanout) and kept in the queue of the same name.
- ``AMQP_PROGRESS_EXCHANGE`` (durable topic): progress events, routing key ``batch.<batch_id>``.
  Each notifier process declares its own exclusive, auto-delete queue on it and binds a batch
  only while that batch has subscribers there (``notifier/hub.py``).

Declarations are idempotent; a mismatch with what exists raises, which is what we want.
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from photoenhance.contracts.levels import LEVELS_BEST_FIRST
from photoenhance.settings import Settings

__all__ = [
    "Topology",
    "declare_progress_exchange",
    "declare_topology",
    "level_queue_name",
    "level_queue_names",
    "work_queue_arguments",
]


@dataclass(frozen=True)
class Topology:
    """Handles on the declared exchanges and queues."""

    events_exchange: AbstractExchange
    work_queue: AbstractQueue
    dead_letter_exchange: AbstractExchange
    dead_letter_queue: AbstractQueue
    progress_exchange: AbstractExchange
    #: Work queue of each quality level, by level name.
    level_queues: dict[str, AbstractQueue]


def level_queue_name(settings: Settings, level: str) -> str:
    """Name of the work queue of ``level`` (``photoenhance.work.level.best``)."""
    return f"{settings.amqp_work_queue}.level.{level}"


def level_queue_names(settings: Settings) -> list[str]:
    """The work queues of every level, best first."""
    return [level_queue_name(settings, q.value) for q in LEVELS_BEST_FIRST]


def work_queue_arguments(settings: Settings) -> dict[str, object]:
    """Arguments of the work queue: quorum type, delivery limit, dead-lettering."""
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": settings.amqp_delivery_limit,
        "x-dead-letter-exchange": settings.amqp_dead_letter_exchange,
    }


async def declare_topology(channel: AbstractChannel, settings: Settings) -> Topology:
    """Declare every exchange and queue the pipeline uses, and their bindings."""
    events = await channel.declare_exchange(
        settings.amqp_events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    dead = await channel.declare_exchange(
        settings.amqp_dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    dead_queue = await channel.declare_queue(
        settings.amqp_dead_letter_exchange, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead_queue.bind(dead)
    work = await channel.declare_queue(
        settings.amqp_work_queue, durable=True, arguments=work_queue_arguments(settings)
    )
    await work.bind(events, routing_key=settings.amqp_events_routing_key)
    levels = {
        q.value: await channel.declare_queue(
            level_queue_name(settings, q.value), durable=True, arguments=work_queue_arguments(settings)
        )
        for q in LEVELS_BEST_FIRST
    }
    progress = await declare_progress_exchange(channel, settings)
    return Topology(
        events_exchange=events,
        work_queue=work,
        dead_letter_exchange=dead,
        dead_letter_queue=dead_queue,
        progress_exchange=progress,
        level_queues=levels,
    )


async def declare_progress_exchange(channel: AbstractChannel, settings: Settings) -> AbstractExchange:
    """Declare the progress exchange alone (the notifier needs nothing else)."""
    return await channel.declare_exchange(
        settings.amqp_progress_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
