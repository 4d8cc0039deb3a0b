"""``photoenhance notifier``: serve batch progress over WebSocket and SSE until SIGTERM/SIGINT.

Run as many replicas as you like behind a load balancer: each has its own queue on the progress
exchange and reads replays from the shared database, so a client may reconnect to any of them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from aiohttp import web

from db.connection import Database
from db.repository import Repository
from notifier.app import create_app, create_metrics_app
from notifier.hub import Hub
from notifier.metrics import NotifierMetrics
from photoenhance import event_loop
from photoenhance.settings import Settings

__all__ = ["add_arguments", "run"]

log = logging.getLogger(__name__)

#: Seconds open streams get to close after shutdown begins.
SHUTDOWN_TIMEOUT_S = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``photoenhance notifier``."""
    parser.add_argument("--host", help="interface to listen on (default: NOTIFIER_HOST)")
    parser.add_argument("--port", type=int, help="port to listen on (default: NOTIFIER_PORT)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until a signal arrives; returns the exit status."""
    host = args.host or settings.notifier_host
    port = settings.notifier_port if args.port is None else args.port
    event_loop.run(serve(settings, host, port), settings.event_loop)
    return 0


async def serve(settings: Settings, host: str, port: int) -> None:
    """Build the dependencies, serve, and tear everything down on SIGTERM or SIGINT."""
    database = Database(settings.database_url, busy_timeout_ms=settings.database_busy_timeout_ms)
    metrics = NotifierMetrics()
    app = create_app(settings, repository=Repository(database), hub=Hub(settings, metrics), metrics=metrics)
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT_S, access_log=None)
    metrics_runner = web.AppRunner(create_metrics_app(metrics), access_log=None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        # The bound address, not the requested one: with port 0 the system picks a free port.
        bound = ", ".join(f"http://{address[0]}:{address[1]}" for address in runner.addresses)
        log.info("notifier listening on %s", bound)
        await metrics_runner.setup()
        await web.TCPSite(metrics_runner, settings.notifier_metrics_host, settings.notifier_metrics_port).start()
        metrics_bound = ", ".join(f"http://{a[0]}:{a[1]}/metrics" for a in metrics_runner.addresses)
        log.info("notifier metrics on %s", metrics_bound)
        await stop.wait()
        log.info("notifier shutting down")
    finally:
        await runner.cleanup()
        await metrics_runner.cleanup()
        await database.dispose()
