"""A stand-in, on this machine, for the GPU machine's bare Python: run the device check's dry run
with only the packages that image holds, before spending a loan on finding what it lacks.

    python bench/bare_image.py PACKAGES DIR
    DEVICE_DIR=DIR/device PYTHON=DIR/python bash bench/device_check.sh --dry-run OUT

PACKAGES: the GPU image's package names (the device tool's KINDS.md lists them), separated by
commas or new lines. Builds DIR/site (a symbolic link to each of this interpreter's installed
distributions whose name is listed, CUDA's own libraries included), DIR/python (this interpreter
with ``-S``: it sees the standard library and DIR/site, nothing else) and DIR/device (what
bench/prepare_device.sh put in .device, with the compiled wheels fetched again for this
interpreter's version, since .device holds cp312 ones). The first loan's two missing imports
(the service stack through the ``photoenhance`` command, pillow-heif) were found this way.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def link_site(wanted: set[str], site: Path) -> list[str]:
    """Link the top-level files of every installed distribution in ``wanted`` into ``site``."""
    site.mkdir(parents=True, exist_ok=True)
    linked = []
    for dist in metadata.distributions():
        name = _normal(dist.metadata["Name"])
        if name not in wanted and not name.startswith("nvidia-"):  # CUDA's libraries come with torch
            continue
        for top in {f.parts[0] for f in dist.files or [] if not f.parts[0].startswith("..")}:
            source = Path(str(dist.locate_file(top)))
            if top != "__pycache__" and not top.endswith(".pth") and source.exists() and not (site / top).exists():
                (site / top).symlink_to(source)
        linked.append(name)
    return sorted(linked)


def device_folder(prepared: Path, target: Path) -> None:
    """``prepared`` (.device) with its compiled wheels replaced by this interpreter's."""
    wheels = target / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    compiled = []
    for wheel in (prepared / "wheels").glob("*.whl"):
        name, version = wheel.name.split("-")[:2]
        if wheel.name.endswith("-none-any.whl"):
            shutil.copy2(wheel, wheels)
        else:
            compiled.append(f"{name}=={version}")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "-d", str(wheels), *compiled], check=True)
    ncnn = target / "ncnn"
    if not ncnn.exists():
        ncnn.symlink_to((prepared / "ncnn").resolve())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", type=Path, help="the GPU image's package names")
    parser.add_argument("dir", type=Path)
    parser.add_argument("--prepared", type=Path, default=ROOT / ".device", help="bench/prepare_device.sh's folder")
    args = parser.parse_args(argv)
    wanted = {_normal(n) for n in re.split(r"[,\n]", args.packages.read_text()) if n.strip()}
    wanted |= {"opencv-python"}  # the image's opencv-python-headless: the same cv2 under another name
    target = args.dir.resolve()
    linked = link_site(wanted, target / "site")
    python = target / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH="{target / "site"}${{PYTHONPATH:+:$PYTHONPATH}}" '
                      f'exec {sys.executable} -S "$@"\n')
    python.chmod(0o755)
    device_folder(args.prepared, target / "device")
    print(f"{len(linked)} distributions linked into {target / 'site'}; run:\n"
          f"  DEVICE_DIR={target / 'device'} PYTHON={python} bash bench/device_check.sh --dry-run OUT")
    return 0


if __name__ == "__main__":
    sys.exit(main())
