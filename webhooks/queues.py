"""The sender's queues: its own copy of every progress event, and TTL delay queues for retries.

- ``<progress exchange>.webhooks``: durable quorum queue bound to the progress exchange with
  ``batch.#``; every sender process consumes it (scale by running more).
- ``<that>.retry.<ms>ms``: classic durable queues with ``x-message-ttl``, dead-lettering through
  the default exchange back into the webhooks queue. A failed delivery is parked there for its
  back-off; no consumer sleeps, and a long delay never holds a shorter one back (one queue per delay).
"""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue

from photoenhance.settings import Settings
from photoenhance.topology import declare_progress_exchange

__all__ = ["BUSY_DELAY_MS", "declare_webhook_queues", "delay_queue_name", "retry_delays_ms", "webhook_queue_name",
           "webhook_queue_names"]

#: Wait before trying again an event whose receiver host has WEBHOOK_MAX_PER_HOST deliveries in flight.
BUSY_DELAY_MS = 1000

def webhook_queue_name(settings: Settings) -> str:
    return f"{settings.amqp_progress_exchange}.webhooks"


def delay_queue_name(settings: Settings, delay_ms: int) -> str:
    return f"{webhook_queue_name(settings)}.retry.{delay_ms}ms"


def retry_delays_ms(settings: Settings) -> list[int]:
    """The back-off of the n-th retry is ``retry_delays_ms[min(n, len - 1)]``: doubling, capped."""
    base = max(1, int(settings.webhook_retry_base_s * 1000))
    cap = max(base, int(min(settings.webhook_retry_max_delay_s, settings.webhook_retry_max_s) * 1000))
    delays = [base]
    while delays[-1] * 2 <= cap:
        delays.append(delays[-1] * 2)
    return delays


def webhook_queue_names(settings: Settings) -> list[str]:
    """Every queue :func:`declare_webhook_queues` declares (for clean-up)."""
    delays = {*retry_delays_ms(settings), BUSY_DELAY_MS}
    return [webhook_queue_name(settings), *(delay_queue_name(settings, d) for d in sorted(delays))]


async def declare_webhook_queues(channel: AbstractChannel, settings: Settings) -> AbstractQueue:
    """Declare the webhooks queue (bound to the progress exchange) and its delay queues."""
    progress = await declare_progress_exchange(channel, settings)
    queue = await channel.declare_queue(
        webhook_queue_name(settings), durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(progress, routing_key="batch.#")
    for delay in sorted({*retry_delays_ms(settings), BUSY_DELAY_MS}):
        await channel.declare_queue(
            delay_queue_name(settings, delay),
            durable=True,
            arguments={
                "x-message-ttl": delay,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": webhook_queue_name(settings),
            },
        )
    return queue


def persistent(body: bytes, attempts: int) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers={"x-webhook-attempts": attempts},
    )
