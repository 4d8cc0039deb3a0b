"""Delivering progress events to webhook receivers: one attempt per message, retries by queue.

Each event on the webhooks queue is handled in a task of its own: find the batch's subscription,
skip unwanted types (and receivers that said 410), open (or find) the event's delivery row, then
POST the event's JSON signed with the batch's secret. 2xx: delivered. 410: gone, nothing more is
sent to that receiver. Anything else (an error status, a redirect, which is not followed, a
timeout, a refused connection, an address that is no longer public): parked in the delay queue of
the next back-off, or ``dead`` once ``WEBHOOK_RETRY_MAX_S`` since the first attempt would pass.
The message is acknowledged only after that outcome is recorded (and the retry published), so a
crash means the event is delivered again: at least once, with the same ``webhook-id``.

A slow receiver cannot slow the others: each attempt has a total timeout, at most
``WEBHOOK_MAX_PER_HOST`` attempts per host run at once, and an event whose host is at that limit
is parked for a second instead of holding a prefetch slot. Answers are read up to
``MAX_ANSWER_BYTES`` and then dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import timedelta
from urllib.parse import urlsplit

import aio_pika
import aiohttp
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from db.repository import Repository
from db.webhooks import DeliveryRecord, SubscriptionRecord
from photoenhance.contracts.progress import ProgressEvent, ProgressEventError
from photoenhance.settings import Settings
from webhooks.queues import BUSY_DELAY_MS, delay_queue_name, persistent, retry_delays_ms
from webhooks.signing import open_secret, signature_headers
from webhooks.urls import CheckedResolver, WebhookUrlError, parse_webhook_url

__all__ = ["MAX_ANSWER_BYTES", "Sender"]

log = logging.getLogger(__name__)

#: Most bytes of a receiver's answer read (a 10 MB answer costs this much, not 10 MB).
MAX_ANSWER_BYTES = 64 * 1024


class Sender:
    """Handles messages of the webhooks queue (see the module docstring)."""

    def __init__(self, settings: Settings, repository: Repository, channel: AbstractChannel) -> None:
        self.settings = settings
        self.repository = repository
        self.channel = channel
        self.delays = retry_delays_ms(settings)
        self._per_host: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(settings.webhook_max_per_host)
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                resolver=CheckedResolver(settings), use_dns_cache=False, limit=settings.webhook_prefetch
            ),
            timeout=aiohttp.ClientTimeout(total=settings.webhook_timeout_s),
            auto_decompress=False,
        )
        #: Outcomes so far, by name (delivered, retry, dead, gone, skipped, busy).
        self.outcomes: defaultdict[str, int] = defaultdict(int)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        """Consumer callback: handle the message in its own task (a slow receiver blocks nothing)."""
        task = asyncio.create_task(self._handle(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Let attempts in flight end (their messages are redelivered if cut off), then close."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.settings.webhook_timeout_s + 1)
        for task in self._tasks:
            task.cancel()
        await self.http.close()

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            outcome = await self._deliver(message)
        except Exception:  # the database or broker: leave the message for redelivery
            log.exception("webhook delivery of a message failed; it will be redelivered")
            await asyncio.sleep(1.0)  # an outage: do not spin on the same message
            await message.nack(requeue=True)
            return
        self.outcomes[outcome] += 1
        await message.ack()

    async def _deliver(self, message: AbstractIncomingMessage) -> str:
        try:
            event = ProgressEvent.from_json(message.body)
        except ProgressEventError as exc:
            log.warning("not a progress event, dropped: %s", exc)
            return "skipped"
        subscription = await self.repository.subscription(event.batch_id)
        if subscription is None or subscription.gone_at is not None or event.type.value not in subscription.events:
            return "skipped"
        delivery = await self.repository.start_delivery(event.batch_id, event.seq, event.type.value)
        if delivery.final:
            return "skipped"
        host = (urlsplit(subscription.url).hostname or "").lower()
        gate = self._per_host[host]
        if gate.locked():
            await self._park(message.body, BUSY_DELAY_MS, attempts=delivery.attempts)
            return "busy"
        async with gate:
            status, error = await self._post(subscription, delivery, event)
        return await self._record(message.body, delivery, status, error)

    async def _post(
        self, subscription: SubscriptionRecord, delivery: DeliveryRecord, event: ProgressEvent
    ) -> tuple[int | None, str | None]:
        body = event.to_json()
        try:
            parse_webhook_url(subscription.url, self.settings)  # the rules may have tightened since
            secret = open_secret(subscription.sealed_secret, self.settings.webhook_secrets_key, subscription.batch_id)
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "PhotoEnhance-Webhooks/1",
                **signature_headers(secret, delivery.webhook_id, body),
            }
            async with self.http.post(subscription.url, data=body, headers=headers, allow_redirects=False) as response:
                await response.content.read(MAX_ANSWER_BYTES)  # bounded; the rest is dropped with the connection
                return response.status, None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except WebhookUrlError as exc:
            return None, f"{exc.code}: {exc.reason}"
        except TimeoutError:
            return None, f"no answer within {self.settings.webhook_timeout_s} s"
        except aiohttp.ClientError as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, WebhookUrlError) else exc
            return None, f"{type(cause).__name__}: {cause}"

    async def _record(self, body: bytes, delivery: DeliveryRecord, status: int | None, error: str | None) -> str:
        if status is not None and 200 <= status < 300:
            await self.repository.record_attempt(
                delivery.batch_id, delivery.seq, state="delivered", status=status, error=None, next_attempt_at=None
            )
            return "delivered"
        if status == 410:
            await self.repository.record_attempt(
                delivery.batch_id, delivery.seq, state="gone", status=status, error=error, next_attempt_at=None
            )
            return "gone"
        attempts = delivery.attempts + 1
        delay_ms = self.delays[min(attempts - 1, len(self.delays) - 1)]
        now = self.repository._now()
        next_at = now + timedelta(milliseconds=delay_ms)
        if (next_at - delivery.first_attempt_at).total_seconds() > self.settings.webhook_retry_max_s:
            await self.repository.record_attempt(
                delivery.batch_id, delivery.seq, state="dead", status=status, error=error, next_attempt_at=None
            )
            log.warning("webhook %s dead after %d attempts: %s", delivery.webhook_id, attempts, error)
            return "dead"
        await self.repository.record_attempt(
            delivery.batch_id, delivery.seq, state="retrying", status=status, error=error, next_attempt_at=next_at
        )
        await self._park(body, delay_ms, attempts=attempts)
        return "retry"

    async def _park(self, body: bytes, delay_ms: int, *, attempts: int) -> None:
        await self.channel.default_exchange.publish(
            persistent(body, attempts), routing_key=delay_queue_name(self.settings, delay_ms), mandatory=True
        )


async def open_channel(settings: Settings) -> tuple[aio_pika.abc.AbstractRobustConnection, AbstractChannel]:
    """A robust connection and a confirming channel with the sender's prefetch."""
    connection = await aio_pika.connect_robust(settings.amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=settings.webhook_prefetch)
    return connection, channel
