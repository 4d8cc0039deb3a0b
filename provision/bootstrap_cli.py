"""``photoenhance init``: prepare buckets, notifications, AMQP topology and the database."""

from __future__ import annotations

import argparse
import asyncio
import sys

from photoenhance.settings import Settings
from provision.bootstrap import BootstrapError, bootstrap

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: everything comes from the settings; running it again is always safe."""
    parser.epilog = "Idempotent: a second run with the same settings changes nothing and says so."


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run every step, print what each did; 0 on success, 1 naming the failed step."""
    try:
        steps = asyncio.run(bootstrap(settings))
    except BootstrapError as exc:
        print(f"init failed: {exc}", file=sys.stderr)
        return 1
    for step in steps:
        detail = f" ({step.detail})" if step.detail else ""
        print(f"{step.change.value:>9}  {step.what}{detail}")
    changes = sum(step.changed for step in steps)
    print("init: no changes" if changes == 0 else f"init: {changes} change(s)")
    return 0
