"""A write transaction is never cut off half-way by a cancellation (a worker's shutdown): it ends
first, then the caller is cancelled, and the database takes the next write at once."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from db.connection import Database
from db.models import Batch
from db.repository import Repository
from db.transactions import Transactions

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)

#: Bound on the write after the cancelled one: it takes milliseconds; a connection left
#: mid-transaction (SQLite's write lock held) would make it wait for the busy timeout and beyond.
NEXT_WRITE_TIMEOUT_S = 10


class TwoStepWrite(Transactions):
    """A write transaction with a pause between its two statements, for the cancellation to land in."""

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self.between = asyncio.Event()

    async def close_batch_slowly(self, batch_id: str) -> None:
        async def op(conn: AsyncConnection) -> None:
            await conn.execute(update(Batch).where(Batch.id == batch_id).values(state="completed"))
            self.between.set()
            await asyncio.sleep(0.5)
            await conn.execute(update(Batch).where(Batch.id == batch_id).values(total=7))

        await self._write(op)


async def cancel_between_statements(database: Database, repository: Repository, cancellations: int) -> None:
    """Start the two-step write on batch b1 and cancel it ``cancellations`` times between its statements."""
    await repository.create_batch("b1", input_bucket="in", options={})
    writer = TwoStepWrite(database)
    task = asyncio.create_task(writer.close_batch_slowly("b1"))
    await writer.between.wait()
    for _ in range(cancellations):
        task.cancel()
        await asyncio.sleep(0.1)
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("cancellations", [1, 2])
async def test_a_cancelled_write_ends_its_transaction_before_the_cancellation_lands(
    database: Database, repository: Repository, cancellations: int
) -> None:
    await cancel_between_statements(database, repository, cancellations)
    async with database.read() as conn:
        state, total = (await conn.execute(select(Batch.state, Batch.total).where(Batch.id == "b1"))).one()
    assert (state, total) == ("completed", 7), "both statements committed, none was cut off"
    await asyncio.wait_for(repository.create_batch("b2", input_bucket="in", options={}), NEXT_WRITE_TIMEOUT_S)
    assert await repository.get_batch("b2") is not None
