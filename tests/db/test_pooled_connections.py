"""Pooled PostgreSQL connections are pinged only after sitting idle (db.connection): a worker's
transactions, about one per image, no longer pay asyncpg's three-round-trip ping each."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from db.connection import Database


class Pings:
    """Counts the pings a database's engine sends."""

    def __init__(self, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        dialect = db.engine.sync_engine.dialect
        original = dialect.do_ping

        def counted(dbapi_connection: object) -> bool:
            self.count += 1
            return original(dbapi_connection)

        monkeypatch.setattr(dialect, "do_ping", counted)


async def backend_pid(db: Database) -> int:
    async with db.write() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def terminate(url: str, pid: int) -> None:
    async with pooled(url, 30) as other, other.write() as conn:
        assert (await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})).scalar_one()


@asynccontextmanager
async def pooled(url: str, idle_s: float) -> AsyncIterator[Database]:
    db = Database(url, ping_after_idle_s=idle_s)
    try:
        yield db
    finally:
        await db.dispose()


async def test_a_connection_used_a_moment_ago_is_handed_out_without_a_ping(
    postgres_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with pooled(postgres_database_url, 30) as db:
        pings = Pings(db, monkeypatch)
        pids = {await backend_pid(db) for _ in range(20)}
        assert len(pids) == 1 and pings.count == 0


async def test_an_idle_connection_is_pinged_and_replaced_when_the_server_dropped_it(
    postgres_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with pooled(postgres_database_url, 0.2) as db:
        pings = Pings(db, monkeypatch)
        first = await backend_pid(db)
        await terminate(postgres_database_url, first)
        await asyncio.sleep(0.3)
        second = await backend_pid(db)  # the ping found it dead: a new connection, no error
        assert second != first and pings.count == 1
        await asyncio.sleep(0.3)
        assert await backend_pid(db) == second and pings.count == 2  # alive: pinged, kept


async def test_a_connection_dropped_inside_the_window_fails_one_transaction_only(postgres_database_url: str) -> None:
    # The price of not pinging a connection used a moment ago: had the server dropped it in that
    # moment, the next transaction on it fails (a worker hands that image back as an outage);
    # the pool has then discarded it, and the next transaction gets a new one.
    async with pooled(postgres_database_url, 30) as db:
        first = await backend_pid(db)
        await terminate(postgres_database_url, first)
        with pytest.raises(DBAPIError) as failed:
            await backend_pid(db)
        # asyncpg says "connection is closed" or, caught mid-operation, "cannot switch to state";
        # either way SQLAlchemy knows the connection is gone and drops it from the pool.
        assert failed.value.connection_invalidated
        assert await backend_pid(db) != first
