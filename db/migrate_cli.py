"""``photoenhance migrate``: apply the database migrations."""

from __future__ import annotations

import argparse
import asyncio

from db.connection import Database
from db.migrate import current_revision, upgrade
from photoenhance.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: the database comes from DATABASE_URL."""


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Upgrade the database to the newest revision and print where it stands."""

    async def main() -> None:
        db = Database(settings.database_url, busy_timeout_ms=settings.database_busy_timeout_ms)
        try:
            await upgrade(db)
            print(f"database at revision {await current_revision(db)}")
        finally:
            await db.dispose()

    asyncio.run(main())
    return 0
