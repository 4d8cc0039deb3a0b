"""The ``photoenhance`` command: one entry point, a subcommand per service or tool.

Each subcommand lives beside the code it runs, in a module exposing
``add_arguments(parser)`` and ``run(args, settings) -> int``. These modules stay light (they import
the heavy code inside ``run``), so ``photoenhance settings`` never loads torch. A subcommand whose
module fails to import stops the command with a message naming it, rather than vanishing from
``--help``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from photoenhance.settings import Settings, SettingsError, settings_table

__all__ = ["SUBCOMMANDS", "BrokenSubcommand", "main"]

#: Subcommand name -> (module implementing it, one-line help). Every module must import: a broken
#: one is reported (exit status 2), never skipped.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "init": ("provision.bootstrap_cli", "Prepare buckets, notifications, AMQP topology and the database."),
    "ingest": ("ingest.cli", "Serve the ingest API and the web page."),
    "processor": ("processor.cli", "Run a worker that turns bucket notifications into results."),
    "engine": ("processor.engine_service.cli", "Hold the models in one process and serve them to workers (ENGINE_SOCKET)."),
    "workers": ("processor.workers_cli", "List the live workers: levels, device, engine version, speed."),
    "reconcile": ("processor.reconcile_cli", "List open batches against the store and enqueue what was missed."),
    "notifier": ("notifier.cli", "Serve progress over WebSocket and SSE."),
    "webhooks": ("webhooks.cli", "Deliver progress events to webhook receivers, signed, with retries."),
    "weights": ("provision.weights_cli", "Check, fetch or convert model weights."),
    "enhance": ("client.cli", "Enhance local photos through a running pipeline."),
    "migrate": ("db.migrate_cli", "Apply database migrations."),
}


class BrokenSubcommand(RuntimeError):
    """A subcommand's module failed to import; the message names the subcommand, module and error."""


def _load(name: str, module: str):
    try:
        return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure to import is reported the same way
        raise BrokenSubcommand(
            f"the {name!r} command cannot be loaded: importing {module} failed: {type(exc).__name__}: {exc}"
        ) from exc


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(prog="photoenhance", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    settings_parser = subs.add_parser("settings", help="Print every environment variable and its value.")
    settings_parser.add_argument("--markdown", action="store_true", help="print the README's table")
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub = subs.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module)
        _load(name, module).add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    try:
        parser = build_parser()
    except BrokenSubcommand as exc:
        print(f"photoenhance: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"photoenhance: bad setting: {exc}", file=sys.stderr)
        return 2
    if args.command == "settings":
        return _print_settings(settings, markdown=args.markdown)
    return int(importlib.import_module(args._module).run(args, settings) or 0)


def _print_settings(settings: Settings, *, markdown: bool) -> int:
    if markdown:
        print(settings_table())
        return 0
    from dataclasses import fields

    for f in fields(settings):
        value = getattr(settings, f.name)
        if "secret" in f.name or f.name in ("api_keys", "api_key_webhooks"):
            value = "***" if value else value
        print(f"{f.metadata['env']}={value}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
