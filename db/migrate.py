"""Schema migrations: bring a database to the latest Alembic revision.

Several processes may start at once against one PostgreSQL database; an advisory lock makes them
migrate one after the other (the later ones find nothing to do). SQLite's write lock does the same.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from db.connection import Database

__all__ = ["alembic_config", "current_revision", "head_revision", "upgrade"]

#: Arbitrary constant naming our advisory lock in PostgreSQL.
_MIGRATION_LOCK_ID = 0x70686F746F  # "photo"


def alembic_config() -> Config:
    """Alembic's configuration, pointing at ``db/migrations``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    return cfg


def head_revision() -> str:
    """The newest revision the code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def upgrade(db: Database, revision: str = "head") -> None:
    """Apply every migration up to ``revision``."""
    async with db.write() as conn:
        await conn.run_sync(_upgrade_sync, revision)


async def current_revision(db: Database) -> str | None:
    """The revision the database is at, or None for an empty database."""
    async with db.read() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


def _upgrade_sync(conn: Connection, revision: str) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)
