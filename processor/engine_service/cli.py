"""``photoenhance engine``: hold the models in one process and serve them to worker processes.

Loads the engine for ``PROCESSOR_QUALITIES`` and serves it on ``ENGINE_SOCKET`` (or ``--socket``)
until SIGTERM/SIGINT. Workers started with the same ``ENGINE_SOCKET`` load no models: they fetch,
decode, encode, record and publish, and hand the pixels here, where the images of every worker
share micro-batches. On a GPU host this lets several worker processes (several cores) feed one
GPU, which one Python process alone cannot (docs/BENCHMARKS.md, "Worker ceiling").

Exit status: 0 after a graceful stop, 2 for bad settings, 3 when the engine cannot start.
"""

from __future__ import annotations

import argparse
import sys

from photoenhance import event_loop
from photoenhance.contracts.options import Quality
from photoenhance.settings import Settings
from processor.cli import levels_are_known

__all__ = ["add_arguments", "run", "serve"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", help="Unix socket to serve on (default: ENGINE_SOCKET)")


async def serve(engine: object, settings: Settings, path: str) -> None:
    """Serve ``engine`` on ``path`` until SIGTERM or SIGINT."""
    from processor.engine_service.server import EngineServer
    from processor.shutdown import ShutdownSignals

    signals = ShutdownSignals()
    signals.install()
    server = EngineServer(engine, settings, path)
    try:
        await server.start()
        await signals.requested.wait()
    finally:
        await server.close()
        signals.uninstall()


def run(args: argparse.Namespace, settings: Settings) -> int:
    from processor.engine import Engine
    from processor.engine.errors import WeightsError

    path = args.socket or settings.engine_socket
    if not path:
        print("photoenhance engine: no socket: set ENGINE_SOCKET or pass --socket", file=sys.stderr)
        return 2
    if not levels_are_known("engine", settings):
        return 2
    try:
        engine = Engine.load(settings, qualities=[Quality(q) for q in settings.processor_qualities])
    except WeightsError as exc:
        print(f"photoenhance engine: cannot start the engine: {exc}", file=sys.stderr)
        return 3
    try:
        event_loop.run(serve(engine, settings, path), settings.event_loop)
    finally:
        engine.close()
    return 0
