"""``photoenhance workers``: the live workers, what each serves, on what device, how fast.

Reads the ``workers`` table (:mod:`db.workers`); a worker whose heartbeats stopped for
``WORKER_GONE_AFTER_BEATS`` beats is not listed. ``--json`` prints the rows as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime

from db.connection import Database
from db.workers import WorkerInfo, WorkerRegistry
from photoenhance.settings import Settings

__all__ = ["add_arguments", "format_table", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def format_table(workers: list[WorkerInfo], now: datetime) -> str:
    """The workers as an aligned text table."""
    if not workers:
        return "no live workers"
    header = ("WORKER", "LEVELS", "DEVICE", "ENGINE", "S/MPX", "UP", "LAST BEAT")
    rows = [header]
    for w in workers:
        speeds = " ".join(f"{level}={value:.3g}" for level, value in sorted(w.speeds.items())) or "-"
        rows.append((
            w.id,
            ",".join(w.levels),
            f"{w.device} ({w.device_name})",
            w.engine_version,
            speeds,
            f"{(now - w.started_at).total_seconds():.0f}s",
            f"{(now - w.last_beat_at).total_seconds():.1f}s ago",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


async def _live(settings: Settings) -> list[WorkerInfo]:
    db = Database(settings.database_url, busy_timeout_ms=settings.database_busy_timeout_ms)
    try:
        return await WorkerRegistry(db, gone_after_s=settings.worker_gone_after_s).live()
    finally:
        await db.dispose()


def run(args: argparse.Namespace, settings: Settings) -> int:
    workers = asyncio.run(_live(settings))
    if args.json:
        print(json.dumps([w.to_dict() for w in workers], indent=2))
    else:
        print(format_table(workers, datetime.now(UTC)))
    return 0
