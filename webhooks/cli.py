"""``photoenhance webhooks``: the webhook sender, its own process (scale it like the others).

Serves ``/healthz`` (200 while consuming) and ``/metrics`` (outcomes so far) on WEBHOOKS_HOST:PORT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from aiohttp import web

from db.connection import Database
from db.repository import Repository
from photoenhance import event_loop
from photoenhance.settings import Settings
from webhooks.queues import declare_webhook_queues
from webhooks.sender import Sender, open_channel

__all__ = ["add_arguments", "run", "serve"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``photoenhance webhooks``."""
    parser.add_argument("--host", help="interface of /healthz and /metrics (default: WEBHOOKS_HOST)")
    parser.add_argument("--port", type=int, help="port of /healthz and /metrics (default: WEBHOOKS_PORT)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Deliver until SIGTERM or SIGINT; returns the exit status."""
    if not settings.webhook_secrets_key:
        print("photoenhance webhooks: WEBHOOK_SECRETS_KEY is not set, so no batch can have a webhook")
        return 2
    host = args.host or settings.webhooks_host
    port = settings.webhooks_port if args.port is None else args.port
    event_loop.run(serve(settings, host, port), settings.event_loop)
    return 0


async def serve(settings: Settings, host: str, port: int) -> None:
    """Consume the webhooks queue and serve the health endpoints until a signal."""
    database = Database(settings.database_url, busy_timeout_ms=settings.database_busy_timeout_ms)
    connection, channel = await open_channel(settings)
    queue = await declare_webhook_queues(channel, settings)
    sender = Sender(settings, Repository(database), channel)
    tag = await queue.consume(sender.on_message)

    async def healthz(_request: web.Request) -> web.Response:
        ok = not connection.is_closed
        return web.json_response({"broker": "up" if ok else "down"}, status=200 if ok else 503)

    async def metrics(_request: web.Request) -> web.Response:
        lines = [f'photoenhance_webhook_outcomes_total{{outcome="{k}"}} {v}' for k, v in sorted(sender.outcomes.items())]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("webhook sender consuming %s, health on http://%s:%d", queue.name, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await queue.cancel(tag)
        await sender.close()
        await runner.cleanup()
        await connection.close()
        await database.dispose()
