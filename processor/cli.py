"""``photoenhance processor``: run one worker until SIGTERM/SIGINT.

Exit status: 0 after a graceful stop, 3 when the engine cannot start (a weight file for one of
``PROCESSOR_QUALITIES`` is missing or altered; the message names it; or, with ``ENGINE_SOCKET``,
no engine process answered within ``ENGINE_WAIT_S``, or one of another engine version did), 2 for
bad settings.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from photoenhance.contracts.options import Quality
from photoenhance.settings import Settings

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--worker-id", help="name used in leases, reports and logs (default: host-pid-random)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from processor.engine.errors import WeightsError
    from processor.engine_service.client import VersionMismatch
    from processor.engine_service.wire import EngineUnavailable
    from processor.worker import Worker

    unknown = sorted(set(settings.processor_qualities) - {q.value for q in Quality})
    if unknown or not settings.processor_qualities:
        print(f"photoenhance processor: PROCESSOR_QUALITIES names no or unknown levels: {unknown}", file=sys.stderr)
        return 2
    try:
        asyncio.run(Worker(settings, worker_id=args.worker_id).run())
    except (WeightsError, EngineUnavailable, VersionMismatch) as exc:
        print(f"photoenhance processor: cannot start the engine: {exc}", file=sys.stderr)
        return 3
    return 0
