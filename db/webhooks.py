"""Webhook subscriptions (one per batch), refusals of manifest webhooks, and the state of each event's delivery."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from db.models import WebhookDelivery, WebhookRefusal, WebhookSubscription
from db.transactions import Transactions

__all__ = [
    "DeliveryRecord",
    "NewSubscription",
    "RefusalRecord",
    "SubscriptionRecord",
    "WebhookOperations",
    "add_subscription",
]

#: Delivery states that end the delivery.
FINAL_DELIVERY_STATES = ("delivered", "dead", "gone")


@dataclass(frozen=True)
class NewSubscription:
    """What a batch's creator asked for, the secret already sealed."""

    url: str
    events: tuple[str, ...]
    sealed_secret: str


@dataclass(frozen=True)
class SubscriptionRecord:
    batch_id: str
    url: str
    events: list[str]
    sealed_secret: str
    gone_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class RefusalRecord:
    """Why a direct batch's manifest webhook was refused."""

    batch_id: str
    code: str
    reason: str
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """The API's form."""
        return {"code": self.code, "reason": self.reason}


@dataclass(frozen=True)
class DeliveryRecord:
    batch_id: str
    seq: int
    webhook_id: str
    event_type: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    first_attempt_at: datetime
    next_attempt_at: datetime | None
    finished_at: datetime | None

    @property
    def final(self) -> bool:
        return self.state in FINAL_DELIVERY_STATES

    def to_dict(self) -> dict[str, Any]:
        """The API's form."""
        iso = lambda t: None if t is None else t.isoformat().replace("+00:00", "Z")  # noqa: E731
        return {
            "seq": self.seq,
            "webhook_id": self.webhook_id,
            "type": self.event_type,
            "state": self.state,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "first_attempt_at": iso(self.first_attempt_at),
            "next_attempt_at": iso(self.next_attempt_at),
            "finished_at": iso(self.finished_at),
        }


async def add_subscription(conn: AsyncConnection, batch_id: str, subscription: NewSubscription, now: datetime) -> None:
    """Store a batch's subscription in the transaction creating the batch."""
    await conn.execute(
        insert(WebhookSubscription).values(
            batch_id=batch_id,
            url=subscription.url,
            events=list(subscription.events),
            sealed_secret=subscription.sealed_secret,
            created_at=now,
        )
    )


def webhook_id(batch_id: str, seq: int) -> str:
    """The ``webhook-id`` of an event: the same on every attempt and every sender."""
    return f"msg_{batch_id}_{seq}"


class WebhookOperations(Transactions):
    """What the sender and the deliveries endpoint read and write."""

    async def subscription(self, batch_id: str) -> SubscriptionRecord | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(*WebhookSubscription.__table__.c).where(WebhookSubscription.batch_id == batch_id)
                )
            ).one_or_none()
        return None if row is None else SubscriptionRecord(**row._mapping)

    async def subscribe(self, batch_id: str, subscription: NewSubscription) -> bool:
        """Give an existing batch its webhook, unless it has one (the first stays); says whether it
        was added. A refusal recorded before is dropped: the batch has a webhook now."""

        async def op(conn: AsyncConnection) -> bool:
            exists = (
                await conn.execute(select(WebhookSubscription.batch_id).where(WebhookSubscription.batch_id == batch_id))
            ).first()
            if exists is not None:
                return False
            await add_subscription(conn, batch_id, subscription, self._now())
            await conn.execute(delete(WebhookRefusal).where(WebhookRefusal.batch_id == batch_id))
            return True

        try:
            return await self._write(op)
        except IntegrityError:  # another worker subscribed it at the same moment
            return False

    async def refuse_webhook(self, batch_id: str, code: str, reason: str) -> None:
        """Record why the batch's manifest webhook was refused (the latest reason replaces an older one)."""

        async def op(conn: AsyncConnection) -> None:
            await conn.execute(delete(WebhookRefusal).where(WebhookRefusal.batch_id == batch_id))
            await conn.execute(
                insert(WebhookRefusal).values(batch_id=batch_id, code=code, reason=reason[:500], created_at=self._now())
            )

        try:
            await self._write(op)
        except IntegrityError:  # another worker recorded a refusal at the same moment: one is enough
            pass

    async def webhook_refusal(self, batch_id: str) -> RefusalRecord | None:
        """Why the batch's manifest webhook was refused, or None."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(select(*WebhookRefusal.__table__.c).where(WebhookRefusal.batch_id == batch_id))
            ).one_or_none()
        return None if row is None else RefusalRecord(**row._mapping)

    async def start_delivery(self, batch_id: str, seq: int, event_type: str) -> DeliveryRecord:
        """The delivery of this event, created on its first attempt (idempotent)."""

        async def op(conn: AsyncConnection) -> DeliveryRecord:
            existing = await self._delivery(conn, batch_id, seq)
            if existing is not None:
                return existing
            await conn.execute(
                insert(WebhookDelivery).values(
                    batch_id=batch_id,
                    seq=seq,
                    webhook_id=webhook_id(batch_id, seq),
                    event_type=event_type,
                    state="retrying",
                    attempts=0,
                    first_attempt_at=self._now(),
                )
            )
            found = await self._delivery(conn, batch_id, seq)
            assert found is not None
            return found

        try:
            return await self._write(op)
        except IntegrityError:  # another sender created it at the same moment
            async with self.db.read() as conn:
                found = await self._delivery(conn, batch_id, seq)
            assert found is not None
            return found

    async def record_attempt(
        self,
        batch_id: str,
        seq: int,
        *,
        state: str,
        status: int | None,
        error: str | None,
        next_attempt_at: datetime | None,
    ) -> None:
        """The outcome of one attempt; a final state is never left again."""

        async def op(conn: AsyncConnection) -> None:
            now = self._now()
            await conn.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.batch_id == batch_id,
                    WebhookDelivery.seq == seq,
                    WebhookDelivery.state.not_in(FINAL_DELIVERY_STATES),
                )
                .values(
                    state=state,
                    attempts=WebhookDelivery.attempts + 1,
                    last_status=status,
                    last_error=None if error is None else error[:500],
                    next_attempt_at=next_attempt_at,
                    finished_at=now if state in FINAL_DELIVERY_STATES else None,
                )
            )
            if state == "gone":
                await conn.execute(
                    update(WebhookSubscription)
                    .where(WebhookSubscription.batch_id == batch_id, WebhookSubscription.gone_at.is_(None))
                    .values(gone_at=now)
                )

        await self._write(op)

    async def deliveries(self, batch_id: str) -> list[DeliveryRecord]:
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(*WebhookDelivery.__table__.c)
                    .where(WebhookDelivery.batch_id == batch_id)
                    .order_by(WebhookDelivery.seq)
                )
            ).all()
        return [DeliveryRecord(**r._mapping) for r in rows]

    async def _delivery(self, conn: AsyncConnection, batch_id: str, seq: int) -> DeliveryRecord | None:
        row = (
            await conn.execute(
                select(*WebhookDelivery.__table__.c).where(
                    WebhookDelivery.batch_id == batch_id, WebhookDelivery.seq == seq
                )
            )
        ).one_or_none()
        return None if row is None else DeliveryRecord(**row._mapping)
