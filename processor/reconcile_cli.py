"""``photoenhance reconcile``: one reconciler pass (or ``--every N`` seconds), printing what it did as JSON.

Needs no models: it lists, compares and re-announces; the workers do the processing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import aio_pika

from db.connection import Database
from db.repository import Repository
from db.workers import WorkerRegistry
from photoenhance.settings import Settings
from processor.publisher import Publisher
from processor.queues import declare_processor_queues
from processor.reconciler import Reconciler
from processor.storage import Storage

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--every", type=float, default=0, metavar="SECONDS", help="repeat every SECONDS until stopped")


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        asyncio.run(_main(settings, args.every))
    except KeyboardInterrupt:
        pass
    return 0


async def _main(settings: Settings, every: float) -> None:
    db = Database(settings.database_url, busy_timeout_ms=settings.database_busy_timeout_ms)
    connection = await aio_pika.connect_robust(settings.amqp_url)
    try:
        with ThreadPoolExecutor(4, thread_name_prefix="photoenhance-reconcile") as executor:
            channel = await connection.channel(publisher_confirms=True)
            await declare_processor_queues(channel, settings)
            registry = WorkerRegistry(db, gone_after_s=settings.worker_gone_after_s)
            reconciler = Reconciler(
                settings, Repository(db), Storage(settings, executor), Publisher(channel, settings),
                served_levels=registry.served_levels,
            )
            while True:
                report = await reconciler.run_once()
                print(json.dumps(report.to_dict()), flush=True)
                if every <= 0:
                    return
                await asyncio.sleep(every)
    finally:
        await connection.close()
        await db.dispose()
