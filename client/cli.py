"""``photoenhance enhance PATH... --out DIR``: enhance local photos through a running pipeline.

Creates a batch through the ingest API (or, with ``--direct``, puts the photos straight into the
input bucket with S3 credentials), uploads them a few at a time with progress bars, follows the
batch's progress stream, and downloads each result the moment it is ready. Running the same
command again continues where it stopped: finished photos are skipped, nothing done is redone.

Exit status: 0 every photo enhanced; 1 some photo failed or was refused (each is listed with
its reason); 2 usage error, unusable output folder, or the server or store cannot be reached;
130 interrupted (run the command again to continue).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from client.enhance import Enhancer, Job, RunAborted
from client.interrupt import cancel_batches, should_cancel
from client.levels import choose_auto, fetch_capabilities
from client.report import Reporter
from client.state import StateError
from photoenhance.contracts.options import EnhanceOptions, OptionsError, OutputFormat, Quality
from photoenhance.settings import Settings

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_UNUSABLE", "add_arguments", "run"]

#: Exit statuses (see the module docstring).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNUSABLE = 2
EXIT_INTERRUPTED = 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``photoenhance enhance``."""
    parser.epilog = (
        "Exit status: 0 all enhanced, 1 some failed (listed with reasons), 2 usage error or server "
        "unreachable, 130 interrupted (re-run to continue)."
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="photos, or folders of photos (JPEG, PNG, WebP, HEIC, AVIF)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the results (and the resume state)")
    parser.add_argument(
        "--quality", choices=["auto", *(q.value for q in Quality)], default="auto",
        help="best: restore faces and upscale; balanced: upscale only; fast: resize only; "
        "auto: the best level the server's workers serve now (default: auto)",
    )
    parser.add_argument(
        "--upscale", type=float, default=2.0, metavar="N", help="output size relative to the input, 1 to 4 (default: 2)"
    )
    parser.add_argument(
        "--format", choices=[f.value for f in OutputFormat], default=OutputFormat.AUTO.value, dest="output_format",
        help="result format; auto keeps JPEG, PNG and WebP and makes JPEG of HEIC and AVIF (default: auto)",
    )
    parser.add_argument("--keep-gps", action="store_true", help="keep the photos' GPS position in the results' EXIF")
    parser.add_argument("--server", metavar="URL", help="ingest API address (default: http://INGEST_HOST:INGEST_PORT)")
    parser.add_argument(
        "--direct", action="store_true",
        help="upload straight into the input bucket with the S3 credentials of the settings; needs an API key",
    )
    parser.add_argument("--api-key", metavar="KEY", help="API key (default: the first of API_KEYS); --direct needs one")
    parser.add_argument(
        "--webhook", metavar="URL",
        help="the server POSTs each progress event of the new batches here, signed (the secret is printed once; "
        "with --direct it is made here and put in _batch.json)",
    )
    parser.add_argument(
        "--webhook-events", metavar="TYPES", default=None,
        help="comma-separated event types for --webhook "
        "(default: all: image.completed,image.failed,batch.completed,batch.cancelled)",
    )
    parser.add_argument(
        "--cancel-on-interrupt", action="store_true",
        help="on Ctrl-C, cancel this run's batches on the server without asking "
        "(on a terminal it asks; otherwise it does not cancel)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary on standard output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars, even on a terminal")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the command; returns the exit status."""
    server = args.server or f"http://{settings.ingest_host}:{settings.ingest_port}"
    quality = args.quality
    try:
        capabilities: dict | None = fetch_capabilities(server)
    except (OSError, ValueError):
        # The server cannot be asked: nothing will be enhanced in this run, and the run says why
        # in its own words (unreachable server, missing files); the level and estimate are moot.
        capabilities = None
    if quality == "auto":
        try:
            if capabilities is None:
                raise KeyError("default_level")
            quality, why = choose_auto(capabilities)
            print(f"quality: {quality} ({why})", file=sys.stderr)
        except (KeyError, ValueError, TypeError):
            quality = Quality.BEST.value
    try:
        options = EnhanceOptions.from_dict({
            "quality": quality, "upscale": args.upscale,
            "output_format": getattr(args, "output_format", "auto"), "keep_gps": getattr(args, "keep_gps", False),
        }).to_dict()
    except OptionsError as exc:
        print(f"photoenhance enhance: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    job = Job(
        paths=list(args.paths),
        out=args.out,
        options=options,
        server=server,
        direct=args.direct,
        api_key=args.api_key or (settings.api_keys[0] if settings.api_keys else None),
        webhook=_webhook(args),
        capabilities=capabilities,
    )
    reporter = Reporter(json_mode=args.json, bars=False if args.no_progress else None)
    enhancer = Enhancer(job, settings, reporter)
    try:
        summary = asyncio.run(enhancer.run())
    except (RunAborted, StateError) as exc:
        print(f"photoenhance enhance: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except KeyboardInterrupt:
        credentials = enhancer.open_batch_credentials()
        if should_cancel(list(credentials), always=args.cancel_on_interrupt):
            for batch_id, state in asyncio.run(cancel_batches(job.server, credentials)).items():
                print(f"photoenhance enhance: batch {batch_id}: {state}", file=sys.stderr)
            return EXIT_INTERRUPTED
        print("photoenhance enhance: interrupted; run the same command again to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.json:
        print(json.dumps(summary, indent=1, ensure_ascii=False))
    else:
        print(_closing_line(summary))
    return EXIT_OK if summary["ok"] else EXIT_FAILED


def _webhook(args: argparse.Namespace) -> dict | None:
    if not args.webhook:
        return None
    webhook: dict = {"url": args.webhook}
    if args.webhook_events:
        webhook["events"] = [t.strip() for t in args.webhook_events.split(",") if t.strip()]
    return webhook


def _closing_line(summary: dict) -> str:
    counts = summary["counts"]
    parts = [f"{counts['completed']} of {counts['files']} enhanced"]
    if counts["skipped"]:
        parts[0] += f" ({counts['skipped']} already done)"
    if counts["failed"] or counts["refused"]:
        parts.append(f"{counts['failed'] + counts['refused']} failed")
    parts.append(f"{counts['uploaded']} uploaded, {counts['downloaded']} downloaded in {summary['elapsed_s']:.1f} s")
    batches = ", ".join(summary["batches"]) or "none"
    return f"{'; '.join(parts)} (batch {batches}) -> {summary['out']}"
