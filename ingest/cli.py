"""``photoenhance ingest``: serve the ingest API (and the web page, once it exists)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import AsyncIterator

from aiohttp import web

from db.connection import Database
from db.repository import Repository
from ingest.app import create_app
from photoenhance.settings import Settings

__all__ = ["add_arguments", "run"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the subcommand (each overrides its setting)."""
    parser.add_argument("--host", help="interface to listen on (INGEST_HOST)")
    parser.add_argument("--port", type=int, help="port to listen on (INGEST_PORT)")


#: How long a thread may hold the GIL while another waits for it, in seconds (Python's default: 0.005).
GIL_SWITCH_INTERVAL_S = 0.0005


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until SIGINT or SIGTERM."""
    host = args.host or settings.ingest_host
    port = args.port if args.port is not None else settings.ingest_port
    # Status pages are signed and encoded on a CPU thread; the event loop waits for the GIL
    # behind it at every switch, 5 ms by default. A shorter interval keeps /healthz and every
    # other request quick while that thread works (bench/status_load.py).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    web.run_app(_app(settings), host=host, port=port, print=None, access_log=None, shutdown_timeout=10)
    return 0


async def _app(settings: Settings) -> web.Application:
    database = Database(settings.database_url, busy_timeout_ms=settings.database_busy_timeout_ms)
    app = create_app(settings, repository=Repository(database))

    async def _database(_app: web.Application) -> AsyncIterator[None]:
        log.info("ingest API up, database %s", database.url.render_as_string(hide_password=True))
        yield
        await database.dispose()

    app.cleanup_ctx.append(_database)
    return app
