"""The transaction machinery every repository part shares: write transactions retried on lost
lock races, the batch lock that orders every write, and rows turned into records."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from db.connection import Database
from db.models import Batch, BatchFile, Image, utcnow
from db.records import BatchRecord, ImageRecord
from db.statements import COUNT_AND_LOG_COMPLETIONS, LOCK_BATCH, OPEN_AND_COUNT_BATCH
from photoenhance.contracts.states import BatchState, ImageState

__all__ = [
    "CURRENT",
    "REFUSED",
    "RETRY_ATTEMPTS",
    "UNFINISHED",
    "BatchExists",
    "LevelChanged",
    "Transactions",
    "UnknownBatch",
    "batch_record",
    "batch_from_values",
    "finish_then_cancel",
    "held_by",
    "image_from_values",
    "image_record",
    "is_lock_race",
    "is_refusal",
    "sqlstate",
]

log = logging.getLogger("db.repository")

T = TypeVar("T")

#: Attempts at a transaction that lost a lock race (SQLite busy, PostgreSQL deadlock/serialisation).
RETRY_ATTEMPTS = 8

#: The SQLSTATE of a statement that refused itself (``photoenhance_refuse_unless``, migration 0008).
REFUSED = "PE001"

#: States of an image that still waits for an outcome.
UNFINISHED = (ImageState.PENDING.value, ImageState.PROCESSING.value)
#: States of the version of a key that counts (every state but superseded).
CURRENT = (
    ImageState.PENDING.value,
    ImageState.PROCESSING.value,
    ImageState.COMPLETED.value,
    ImageState.FAILED.value,
)


class UnknownBatch(LookupError):
    """No batch has this id."""


class LevelChanged(Exception):
    """The batch, as the start transaction found it, no longer resolves the image to the level it
    was started at (its options changed since the caller read them); nothing was written.
    ``batch`` is the batch as found, for the caller to resolve again without another read."""

    def __init__(self, batch: Any) -> None:
        super().__init__(f"batch {getattr(batch, 'id', '?')}: its options resolve to another level now")
        self.batch = batch


class BatchExists(Exception):
    """A batch with this id exists already."""


async def finish_then_cancel(work: Awaitable[T]) -> T:
    """Await ``work`` in a task of its own; a cancellation meanwhile is held back until that task
    has ended, then raised.

    Why: a transaction cancelled between two statements leaves its pooled connection mid-way
    (aiosqlite's thread still running the statement, asyncpg's protocol busy), and SQLite's write
    lock with it. A worker cut off at shutdown then hung on its next write, or left an image
    claimed in a transaction that committed after all. Transactions here are short and bounded
    (busy timeouts, retries), so holding a cancellation back costs little.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                continue  # cancelled again: still let the transaction end first
            except Exception:  # noqa: BLE001 - the cancellation is what the caller gets
                break
        if not task.cancelled() and task.exception() is not None:
            log.debug("a transaction failed while its caller was being cancelled: %r", task.exception())
        raise


class Transactions:
    """A database and a clock, and the helpers every operation runs its transaction with."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self._now = clock

    async def _write(
        self, op: Callable[[AsyncConnection], Awaitable[T]], *, retry_on_integrity: bool = False,
        retry_lock_races: bool = True,
    ) -> T:
        """Run ``op`` in a write transaction, retrying lost lock races with jittered back-off
        (unless ``retry_lock_races`` is false: then the caller gets the :class:`DBAPIError`, which
        :func:`is_lock_race` recognises).

        A cancellation (a worker's shutdown past its grace) takes effect only once the transaction
        has ended: see :func:`finish_then_cancel`. The caller then gets the ``CancelledError``,
        though the transaction may have committed; it must not assume it did not.
        """
        return await finish_then_cancel(self._write_retried(op, retry_on_integrity, retry_lock_races))

    async def _statement(self, op: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``op``, one statement that is its own transaction (:meth:`Database.statement`,
        PostgreSQL), not retried: its caller has a general way to fall back on. A cancellation
        waits for it, as for :meth:`_write`."""

        async def run() -> T:
            async with self.db.statement() as conn:
                return await op(conn)

        return await finish_then_cancel(run())

    async def _write_retried(
        self, op: Callable[[AsyncConnection], Awaitable[T]], retry_on_integrity: bool, retry_lock_races: bool
    ) -> T:
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                async with self.db.write() as conn:
                    return await op(conn)
            except IntegrityError:
                if not retry_on_integrity or attempt == RETRY_ATTEMPTS:
                    raise
            except DBAPIError as exc:
                if not retry_lock_races or not is_lock_race(exc) or attempt == RETRY_ATTEMPTS:
                    raise
                log.debug("lock race (attempt %d): %s", attempt, exc.orig)
            await asyncio.sleep(random.uniform(0, 0.02 * 2**attempt))
        raise AssertionError("unreachable")


    async def _lock_batch(self, conn: AsyncConnection, batch_id: str) -> BatchRecord:
        row = (await conn.execute(LOCK_BATCH, {"batch_id": batch_id})).one_or_none()
        if row is None:
            raise UnknownBatch(batch_id)
        return batch_record(row)

    async def _lock_and_count(self, conn: AsyncConnection, values: dict[str, Any]) -> BatchRecord | None:
        """Lock a batch by moving its counters on (:data:`~db.statements.OPEN_AND_COUNT_BATCH`,
        ``values`` its parameters; with ``completions``, PostgreSQL's
        :data:`~db.statements.COUNT_AND_LOG_COMPLETIONS`, which logs their events too); the batch
        as it now stands, None when there is no such batch."""
        statement = COUNT_AND_LOG_COMPLETIONS if "completions" in values else OPEN_AND_COUNT_BATCH
        row = (await conn.execute(statement, values)).one_or_none()
        return None if row is None else batch_record(row)

    async def _load_batch(self, conn: AsyncConnection, batch_id: str) -> BatchRecord:
        row = (await conn.execute(select(*Batch.__table__.c).where(Batch.id == batch_id))).one()
        return batch_record(row)

    async def _load_image(self, conn: AsyncConnection, image_id: int) -> ImageRecord:
        row = (await conn.execute(select(*Image.__table__.c).where(Image.id == image_id))).one()
        return image_record(row)

    async def _batch_of(self, conn: AsyncConnection, image_id: int) -> str:
        batch_id = (await conn.execute(select(Image.batch_id).where(Image.id == image_id))).scalar_one_or_none()
        if batch_id is None:
            raise LookupError(f"no image with id {image_id}")
        return batch_id

    async def _find_version(self, conn: AsyncConnection, bucket: str, key: str, etag: str) -> ImageRecord | None:
        row = (
            await conn.execute(
                select(*Image.__table__.c).where(Image.bucket == bucket, Image.key == key, Image.etag == etag)
            )
        ).one_or_none()
        return None if row is None else image_record(row)



def held_by(owner: str) -> list[Any]:
    """Conditions that hold while ``owner``'s claim on an image stands."""
    return [Image.state == ImageState.PROCESSING.value, Image.lease_owner == owner]


def sqlstate(exc: DBAPIError) -> str | None:
    """The SQLSTATE of a failure PostgreSQL reported (None for SQLite's, and for a driver's own)."""
    return getattr(exc.orig, "sqlstate", None) or getattr(getattr(exc.orig, "__cause__", None), "sqlstate", None)


def is_refusal(exc: DBAPIError) -> bool:
    """Whether a statement refused itself (``photoenhance_refuse_unless``, migration 0008): what it
    checks did not hold, and it did nothing."""
    return sqlstate(exc) == REFUSED


def is_lock_race(exc: DBAPIError) -> bool:
    """Whether the failure was losing a lock race that a retry resolves."""
    text = str(exc.orig).lower()
    code = sqlstate(exc)
    return (
        "database is locked" in text
        or "database table is locked" in text
        or code in {"40001", "40P01"}
        or "deadlock detected" in text
        or "could not serialize" in text
    )


def batch_record(row: Any) -> BatchRecord:
    """A batches row as a record."""
    return batch_from_values(dict(row._mapping))


def batch_from_values(values: dict[str, Any]) -> BatchRecord:
    """A record from a batches row's values by column name (``state`` as stored)."""
    return BatchRecord(**{**values, "state": BatchState(values["state"])})


async def declared_not_uploaded(conn: AsyncConnection, batch_id: str) -> list[tuple[str, int]]:
    """(name, declared size) of each file the batch declared that has no image row yet, by name."""
    arrived = set((await conn.execute(select(Image.name).where(Image.batch_id == batch_id))).scalars())
    declared = (
        await conn.execute(
            select(BatchFile.name, BatchFile.declared_size).where(BatchFile.batch_id == batch_id).order_by(BatchFile.name)
        )
    ).all()
    return [(name, size) for name, size in declared if name not in arrived]


def image_record(row: Any) -> ImageRecord:
    """An images row as a record."""
    return image_from_values(dict(row._mapping))


def image_from_values(values: dict[str, Any]) -> ImageRecord:
    """A record from an images row's values by column name (``state`` as stored)."""
    return ImageRecord(**{**values, "state": ImageState(values["state"])})
