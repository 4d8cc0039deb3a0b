"""The ``photoenhance`` command: one entry point, a subcommand per service or tool.

Each subcommand lives beside the code it runs, in a module exposing
``add_arguments(parser)`` and ``run(args, settings) -> int``. Modules are imported only when their
subcommand is chosen, so ``photoenhance settings`` never loads torch.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from photoenhance.settings import Settings, SettingsError, settings_table

__all__ = ["SUBCOMMANDS", "main"]

#: Subcommand name -> (module implementing it, one-line help). Modules that do not exist yet are
#: skipped, so a service's issue adds its line here and its module beside its code.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "init": ("provision.bootstrap_cli", "Prepare buckets, notifications, AMQP topology and the database."),
    "ingest": ("ingest.cli", "Serve the ingest API and the web page."),
    "processor": ("processor.cli", "Run a worker that turns bucket notifications into results."),
    "reconcile": ("processor.reconcile_cli", "List open batches against the store and enqueue what was missed."),
    "notifier": ("notifier.cli", "Serve progress over WebSocket and SSE."),
    "weights": ("provision.weights_cli", "Check, fetch or convert model weights."),
    "enhance": ("client.cli", "Enhance local photos through a running pipeline."),
    "migrate": ("db.migrate_cli", "Apply database migrations."),
}


def _available() -> dict[str, tuple[str, str]]:
    found = {}
    for name, (module, help_text) in SUBCOMMANDS.items():
        try:
            if importlib.util.find_spec(module) is not None:
                found[name] = (module, help_text)
        except ModuleNotFoundError:  # its package does not exist yet
            continue
    return found


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(prog="photoenhance", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    settings_parser = subs.add_parser("settings", help="Print every environment variable and its value.")
    settings_parser.add_argument("--markdown", action="store_true", help="print the README's table")
    for name, (module, help_text) in _available().items():
        sub = subs.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args = build_parser().parse_args(argv)
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
        if "secret" in f.name or f.name == "api_keys":
            value = "***" if value else value
        print(f"{f.metadata['env']}={value}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
