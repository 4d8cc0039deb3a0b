"""Connections: one :class:`Database` per process, for SQLite or PostgreSQL.

SQLite is opened in WAL mode with a busy timeout, and write transactions begin with
``BEGIN IMMEDIATE``: a deferred transaction that reads first and writes later can find its snapshot
stale once another process has committed, and then fails at once instead of waiting. Reads keep
deferred transactions so they never wait for a writer.

SQLite has one writer at a time. Within a process, writers queue on an asyncio lock before they
begin: otherwise every in-flight image opens its own ``BEGIN IMMEDIATE`` and all but one sleep in
SQLite's busy handler, whose growing sleeps (up to 100 ms) leave the lock idle between them.
Between processes the busy timeout still arbitrates.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

__all__ = ["Database"]


class Database:
    """The process's database engines: :meth:`write` and :meth:`read` open transactions."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 30_000, echo: bool = False) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            _ensure_sqlite_folder(self.url.database)
            self._writer = _sqlite_engine(url, busy_timeout_ms, immediate=True, echo=echo)
            self._reader = _sqlite_engine(url, busy_timeout_ms, immediate=False, echo=echo)
            self._write_gate: asyncio.Lock | None = asyncio.Lock()
        else:
            self._writer = create_async_engine(url, echo=echo, pool_pre_ping=True)
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
