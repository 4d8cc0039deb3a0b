"""Everything the worker publishes, each with publisher confirms, on one channel.

- progress events: persistent, on the progress exchange with ``batch.<batch_id>``, after the
  database commit that appended them and before the message that caused them is acknowledged;
- re-announcements (reconciler): a synthesised notification on the events exchange with the
  events routing key, so announced and re-announced objects take one path;
- routed announcements: one object's notification into its level's work queue
  (:mod:`processor.routing`), by name on the default exchange, its level in a header;
- delayed retries: the same notification into a delay queue (:mod:`processor.queues`), of the
  image's level when it has one.

Re-announcements and retries are ``mandatory``: a missing queue or binding raises instead of
silently dropping the object.
"""

from __future__ import annotations

from collections.abc import Sequence

from aio_pika.abc import AbstractChannel, AbstractExchange

from photoenhance.contracts.progress import ProgressEvent, progress_routing_key
from photoenhance.settings import Settings
from photoenhance.topology import level_queue_name
from processor.queues import delay_queue_name, persistent

__all__ = ["ATTEMPT_HEADER", "DEFERRAL_HEADER", "LEVEL_HEADER", "Publisher"]

#: Header counting the transient failures an announcement has been through.
ATTEMPT_HEADER = "x-photoenhance-attempt"
#: Header counting how often an announcement was put off because another worker held the image.
DEFERRAL_HEADER = "x-photoenhance-deferrals"
#: Header naming the level an announcement was routed to (the queue it sits in).
LEVEL_HEADER = "x-photoenhance-level"


class Publisher:
    """Publishes on a channel opened with publisher confirms (aio-pika's default)."""

    def __init__(self, channel: AbstractChannel, settings: Settings) -> None:
        self._channel = channel
        self._settings = settings
        self._progress: AbstractExchange | None = None
        self._events: AbstractExchange | None = None

    async def _exchanges(self) -> tuple[AbstractExchange, AbstractExchange]:
        if self._progress is None or self._events is None:
            # passive look-ups: the topology is declared once, by the consumer
            self._progress = await self._channel.get_exchange(self._settings.amqp_progress_exchange)
            self._events = await self._channel.get_exchange(self._settings.amqp_events_exchange)
        return self._progress, self._events

    async def progress(self, events: Sequence[ProgressEvent]) -> None:
        """Publish progress events in order; returns once the broker confirmed each."""
        if not events:
            return
        progress, _ = await self._exchanges()
        for event in events:
            await progress.publish(persistent(event.to_json()), routing_key=progress_routing_key(event.batch_id))

    async def announce(self, body: bytes) -> None:
        """Put a notification on the work queue's path (the events exchange)."""
        _, events = await self._exchanges()
        await events.publish(persistent(body), routing_key=self._settings.amqp_events_routing_key, mandatory=True)

    async def route(self, body: bytes, level: str, *, attempt: int = 0, deferrals: int = 0) -> None:
        """Put one object's notification into ``level``'s work queue; returns once confirmed."""
        message = persistent(body, {ATTEMPT_HEADER: attempt, DEFERRAL_HEADER: deferrals, LEVEL_HEADER: level})
        await self._channel.default_exchange.publish(
            message, routing_key=level_queue_name(self._settings, level), mandatory=True
        )

    async def later(
        self, body: bytes, delay_ms: int, *, attempt: int, deferrals: int, level: str | None = None
    ) -> None:
        """Put a notification into the delay queue of ``delay_ms``; after it, it returns to its
        level's queue (or, without a level, to the announcements)."""
        headers: dict[str, object] = {ATTEMPT_HEADER: attempt, DEFERRAL_HEADER: deferrals}
        if level is not None:
            headers[LEVEL_HEADER] = level
        await self._channel.default_exchange.publish(
            persistent(body, headers), routing_key=delay_queue_name(self._settings, delay_ms, level), mandatory=True
        )
