"""Connections: one :class:`Database` per process, for SQLite or PostgreSQL.

SQLite is opened in WAL mode with a busy timeout, and write transactions begin with
``BEGIN IMMEDIATE``: a deferred transaction that reads first and writes later can find its snapshot
stale once another process has committed, and then fails at once instead of waiting. Reads keep
deferred transactions so they never wait for a writer.

A pooled PostgreSQL connection is pinged before it is handed out only when it has been idle for
``ping_after_idle_s`` (HikariCP's "alive bypass window"), not at every checkout as SQLAlchemy's
``pool_pre_ping`` does: asyncpg's ping is three round trips (BEGIN, an empty statement,
ROLLBACK), which a worker paid for every transaction, about one per image, though a connection
it used a moment ago is as alive as a connection can be known to be. A dead one found by the ping
is replaced; one that dies mid-use fails that transaction, as it would have with a ping.

SQLite has one writer at a time. Within a process, writers queue on an asyncio lock before they
begin: otherwise every in-flight image opens its own ``BEGIN IMMEDIATE`` and all but one sleep in
SQLite's busy handler, whose growing sleeps (up to 100 ms) leave the lock idle between them.
Between processes the busy timeout still arbitrates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

__all__ = ["PING_AFTER_IDLE_S", "Database"]

#: Seconds a pooled PostgreSQL connection may sit idle and still be handed out without a ping.
PING_AFTER_IDLE_S = 1.0


class Database:
    """The process's database engines: :meth:`write` and :meth:`read` open transactions."""

    def __init__(
        self, url: str, *, busy_timeout_ms: int = 30_000, echo: bool = False, ping_after_idle_s: float = PING_AFTER_IDLE_S
    ) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            _ensure_sqlite_folder(self.url.database)
            self._writer = _sqlite_engine(url, busy_timeout_ms, immediate=True, echo=echo)
            self._reader = _sqlite_engine(url, busy_timeout_ms, immediate=False, echo=echo)
            self._write_gate: asyncio.Lock | None = asyncio.Lock()
        else:
            self._writer = create_async_engine(url, echo=echo)
            _ping_when_idle(self._writer, ping_after_idle_s)
            self._reader = self._writer
            self._write_gate = None

    @property
    def engine(self) -> AsyncEngine:
        """The engine write transactions run on (also what migrations use)."""
        return self._writer

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that will write: committed on success, rolled back on error."""
        if self._write_gate is None:
            async with self._writer.begin() as conn:
                yield conn
            return
        async with self._write_gate, self._writer.begin() as conn:
            yield conn

    @asynccontextmanager
    async def statement(self) -> AsyncIterator[AsyncConnection]:
        """PostgreSQL: a connection on which each statement is a transaction of its own (the
        server's implicit transaction: no BEGIN, no COMMIT, no round trip between a statement's
        end and its commit). For writes that one statement says whole (``db.statements.WRITE_GROUP``)."""
        if self.is_sqlite:
            raise RuntimeError("one-statement transactions are PostgreSQL's; SQLite writes with write()")
        async with self._writer.connect() as conn:
            # Only an attribute of the driver's connection: no round trip, and the pool sets it
            # back when the connection returns.
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    @asynccontextmanager
    async def read(self, *, consistent: bool = False) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction that never waits for writers.

        ``consistent``: every statement sees one snapshot, for reads that must agree with each
        other (a batch's counters and its images). SQLite's WAL readers always do; PostgreSQL
        needs REPEATABLE READ, as READ COMMITTED takes a new snapshot per statement.
        """
        async with self._reader.connect() as conn:
            if consistent and not self.is_sqlite:
                await conn.execution_options(isolation_level="REPEATABLE READ")
            yield conn

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self._writer.dispose()
        if self._reader is not self._writer:
            await self._reader.dispose()


def _ping_when_idle(engine: AsyncEngine, idle_s: float) -> None:
    """Ping a pooled connection at checkout only if it has been idle for ``idle_s`` or more; a
    failed ping makes the pool replace it (``DisconnectionError``)."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < idle_s:
            return  # new, or used a moment ago
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # noqa: BLE001 - any failure means this connection is not usable
            raise DisconnectionError(f"a pooled connection idle for {idle_s:g} s or more failed its ping") from exc


def _ensure_sqlite_folder(database: str | None) -> None:
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _sqlite_engine(url: str, busy_timeout_ms: int, *, immediate: bool, echo: bool) -> AsyncEngine:
    engine = create_async_engine(url, echo=echo, connect_args={"timeout": busy_timeout_ms / 1000})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (the driver's implicit BEGIN is always DEFERRED).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # FULL: a commit survives power loss, which "ack only after the row is durable" needs.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
