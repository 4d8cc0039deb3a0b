"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from db.connection import Database
from db.migrate import current_revision, head_revision, upgrade
from db.models import Base, utcnow

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


@both_engines
async def test_rows_the_unique_indexes_refuse_stop_the_upgrade_by_name(database_url: str) -> None:
    # Migration 0007 adds one-current-version-per-key; a database that a race left with two
    # current versions of a key must stop there saying which, not fail inside CREATE INDEX.
    db = Database(database_url)
    try:
        await upgrade(db, "0006")
        async with db.write() as conn:
            await conn.execute(text(
                "INSERT INTO batches (id, state, source, input_bucket, options, total, completed, failed, cancelled,"
                " last_seq, created_at, updated_at) VALUES ('b1', 'open', 'direct', 'in', '{}', 2, 0, 0, 0, 0,"
                " :now, :now)"), {"now": utcnow()})
            for n in (1, 2):
                await conn.execute(text(
                    "INSERT INTO images (batch_id, bucket, key, name, etag, size, state, attempts, created_at,"
                    " updated_at) VALUES ('b1', 'in', 'b1/a.jpg', 'a.jpg', :etag, 1, 'pending', 0, :now, :now)"),
                    {"etag": f"e{n}", "now": utcnow()})
        with pytest.raises(RuntimeError, match=r"uq_images_current_key: .*in b1/a\.jpg \(2 rows\)"):
            await upgrade(db)
        assert await current_revision(db) == "0006"
        async with db.write() as conn:
            await conn.execute(text("UPDATE images SET state = 'superseded' WHERE etag = 'e1'"))
        await upgrade(db)
        assert await current_revision(db) == head_revision()
    finally:
        await db.dispose()
