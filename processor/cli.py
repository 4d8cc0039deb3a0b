"""``photoenhance processor``: run one worker until SIGTERM/SIGINT.

With ``--workers N``: one engine process and N workers feeding it (:mod:`processor.process_group`).

Exit status: 0 after a graceful stop, 3 when the engine cannot start (a weight file for one of
``PROCESSOR_QUALITIES`` is missing or altered; the message names it; or, with ``ENGINE_SOCKET``,
no engine process answered within ``ENGINE_WAIT_S``, or one of another engine version did), 2 for
bad settings.
"""

from __future__ import annotations

import argparse
import sys

from photoenhance import event_loop
from photoenhance.contracts.options import Quality
from photoenhance.settings import Settings

__all__ = ["add_arguments", "levels_are_known", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--worker-id", help="name used in leases, reports and logs (default: host-pid-random)")
    parser.add_argument(
        "--workers", type=int, default=0, metavar="N",
        help="run one engine process and N worker processes feeding it, as one group (a GPU host); "
             "worker i serves /healthz on PROCESSOR_PORT + i",
    )


def levels_are_known(command: str, settings: Settings) -> bool:
    """Whether ``PROCESSOR_QUALITIES`` names levels, all known; if not, says so on stderr."""
    unknown = sorted(set(settings.processor_qualities) - {q.value for q in Quality})
    if unknown or not settings.processor_qualities:
        print(f"photoenhance {command}: PROCESSOR_QUALITIES names no or unknown levels: {unknown}", file=sys.stderr)
        return False
    return True


def run(args: argparse.Namespace, settings: Settings) -> int:
    from processor.engine.errors import WeightsError
    from processor.engine_service.client import VersionMismatch
    from processor.engine_service.wire import EngineUnavailable
    from processor.worker import Worker

    if not levels_are_known("processor", settings):
        return 2
    if args.workers < 0:
        print("photoenhance processor: --workers takes a count of 1 or more", file=sys.stderr)
        return 2
    if args.workers:
        from processor.process_group import run_group

        return run_group(settings, args.workers, args.worker_id)
    try:
        event_loop.run(Worker(settings, worker_id=args.worker_id).run(), settings.event_loop)
    except (WeightsError, EngineUnavailable, VersionMismatch) as exc:
        print(f"photoenhance processor: cannot start the engine: {exc}", file=sys.stderr)
        return 3
    return 0
