"""Quota counters in the database, so every ingest replica counts against the same limits.

:func:`charge_quota` runs inside the transaction that creates the batch: either the batch exists
and every counter moved, or neither. Each counter moves with one conditional update
(``amount = amount + n WHERE amount + n <= limit``); on PostgreSQL the row lock that update takes
queues concurrent creations of one subject, and READ COMMITTED gives the statements after the wait
a fresh snapshot, so the open-batch count that follows also sees every batch committed before.
SQLite serialises writers outright. Both make "accepted == limit" exact under any concurrency.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from db.models import Batch, RateCounter
from photoenhance.contracts.states import BatchState
from photoenhance.ratelimit import DAY, OPEN_BATCHES_RETRY_S, QuotaPlan, retry_after_s, window_start

__all__ = ["OPEN_STATES", "QuotaExceeded", "charge_quota"]

#: Batch states that count as open for the open-batches limit.
OPEN_STATES = (BatchState.OPEN.value, BatchState.CANCELLING.value)


class QuotaExceeded(Exception):
    """A request does not fit a limit: its error ``code``, plain words, and when to retry."""

    def __init__(self, code: str, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


async def charge_quota(conn: AsyncConnection, plan: QuotaPlan, now: datetime) -> None:
    """Count one batch creation against ``plan``'s limits, or raise :class:`QuotaExceeded`.

    Run it in the creating transaction: the exception rolls back what was counted before it.
    """
    now_s = now.timestamp()
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    for charge in plan.charges:
        start = window_start(now_s, charge.window_s)
        await conn.execute(
            insert(RateCounter)
            .values(subject=plan.subject, counter=charge.counter, window_start=start, amount=0)
            .on_conflict_do_nothing()
        )
        where = [
            RateCounter.subject == plan.subject,
            RateCounter.counter == charge.counter,
            RateCounter.window_start == start,
        ]
        if charge.limit > 0:
            where.append(RateCounter.amount + charge.amount <= charge.limit)
        moved = await conn.execute(update(RateCounter).where(*where).values(amount=RateCounter.amount + charge.amount))
        if moved.rowcount != 1:
            raise QuotaExceeded(
                charge.code,
                f"over the limit of {charge.limit} {charge.counter} per {charge.window_s // 3600} h "
                f"for this {_who(plan.subject)}",
                retry_after_s(now_s, charge.window_s),
            )
    if plan.open_batches > 0:
        open_now = (
            await conn.execute(
                select(func.count())
                .select_from(Batch)
                .where(Batch.quota_subject == plan.subject, Batch.state.in_(OPEN_STATES))
            )
        ).scalar_one()
        if open_now >= plan.open_batches:
            raise QuotaExceeded(
                "quota_open_batches",
                f"{open_now} batches of this {_who(plan.subject)} are still open (limit {plan.open_batches}); "
                "wait until one completes",
                OPEN_BATCHES_RETRY_S,
            )
    # Windows that ended more than a day ago are of no use any more; this subject's are cheap to find.
    horizon = window_start(now_s, DAY) - DAY
    await conn.execute(
        delete(RateCounter).where(RateCounter.subject == plan.subject, RateCounter.window_start < horizon)
    )


def _who(subject: str) -> str:
    return "API key" if subject.startswith("key:") else "client address"

