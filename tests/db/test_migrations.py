"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from db.connection import Database
from db.migrate import current_revision, head_revision, upgrade
from db.models import Base

both_engines = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


@both_engines
async def test_upgrade_reaches_head_and_is_repeatable(database_url: str) -> None:
    db = Database(database_url)
    try:
        assert await current_revision(db) is None
        await upgrade(db)
        await upgrade(db)  # a second run finds nothing to do
        assert await current_revision(db) == head_revision()
        async with db.read() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert {"batches", "batch_files", "images", "events", "workers"} <= tables
    finally:
        await db.dispose()


@both_engines
async def test_models_match_the_migrated_schema(database_url: str) -> None:
    db = Database(database_url)
    try:
        await upgrade(db)
        async with db.read() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata)
            )
        assert diff == []
    finally:
        await db.dispose()


async def test_sqlite_runs_in_wal_mode(database_url: str) -> None:
    db = Database(database_url)
    try:
        async with db.read() as conn:
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one()
            timeout = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar_one()
        assert (mode, timeout) == ("wal", 30_000)
    finally:
        await db.dispose()
