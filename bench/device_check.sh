#!/usr/bin/env bash
# The one GPU check: everything the engine's GPU questions need, in one command, into OUTDIR.
#
#   bench/device_check.sh OUTDIR              on the GPU machine (<= 8 min on one H200)
#   bench/device_check.sh --dry-run OUTDIR    the same steps on the CPU at toy sizes
#
# Prepare first, on a connected machine: bench/prepare_device.sh (builds .device/, 34 MiB with the
# x4plus files); then through the device tool, carrying .device:
#   run(command="bash bench/device_check.sh $OUT", carry=[".device"], timeout_s=560)
# Writes OUTDIR/gpu_variants.json (bench/gpu_variants.py), OUTDIR/engine.json (bench/engine.py: best images/s for 1-MP single-face portraits at micro-batch
# 1, 2, 4, 8, 16, balanced MP/s, time per step, TFLOP/s against the data-sheet peak, fp16 vs fp32, the
# stock GFPGANer loop), OUTDIR/device_check.json (all of it plus cold start, peak GPU memory, bf16/fp16
# vs fp32 per network, device path vs reference path) and OUTDIR/device_check.png.
set -euo pipefail
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT="${1:?usage: bench/device_check.sh [--dry-run] OUTDIR}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
PREP="${DEVICE_DIR:-$ROOT/.device}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export PYTHONUNBUFFERED=1 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
log() { echo "[device_check $(date -u +%H:%M:%S)] $*"; }
# set -e ends the script at a failing step: say which, so a one-shot GPU run does not end in silence.
trap 'echo "device_check: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

# 1. What the bare machine lacks, from the carried folder, with no index.
if "$PY" -c 'from processor.engine import compat; compat.install_torchvision_alias(); import basicsr, facexlib, gfpgan, realesrgan' 2>/dev/null; then
    log "stack importable: nothing to install"
elif [ -d "$PREP/wheels" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$PREP"/wheels/*.whl
    export PYTHONPATH="$ROOT:$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
    log "installed $(ls "$PREP"/wheels | wc -l) wheels from $PREP/wheels"
else
    echo "device_check: basicsr/gfpgan/facexlib/realesrgan missing and no $PREP/wheels: run bench/prepare_device.sh" >&2
    exit 2
fi

# 2. Weights: random ones in the real formats (timing), the real x4plus converted from ncnn (real-weights row).
"$PY" -c "import sys; from pathlib import Path; from harness.weights import write_random_weights; write_random_weights(Path(sys.argv[1]))" "$WORK/weights"
if [ -f "$PREP/ncnn/realesrgan-x4plus.bin" ]; then
    # The conversion itself, not the photoenhance command: the command loads every subcommand's
    # module, and the GPU machine lacks the service stack (aio-pika, minio...) that some import.
    "$PY" -c "import sys; from pathlib import Path; from provision.weights_cli import import_ncnn; import_ncnn(Path(sys.argv[1]), source=Path(sys.argv[2]), keys=['x4plus-ncnn'])" \
        "$WORK/weights" "$PREP/ncnn"
    log "x4plus converted from $PREP/ncnn"
fi
log "weights ready"

# 3. The sweep (bench/engine.py), then the rest (bench/device_check.py).
# DEVICE_CHECK_COMPILE=1 adds the engine's cold start with ENGINE_COMPILE (~5 minutes on an H200).
if [ "$DRY" = 1 ]; then
    SWEEP=(--device cpu --size 64 --faces 1 --batch-sizes 1 --repeats 1 --batch 1 --qualities best,balanced)
else
    SWEEP=(--device cuda --size 1024 --faces 1 --batch-sizes 1,2,4,8,16 --repeats 3 --batch 16 --qualities best,balanced)
fi
# A failed sweep is recorded and the check goes on: the GPU is lent once, and the other sections
# do not need the sweep. The exit status still says it failed.
STATUS=0
if "$PY" "$ROOT/bench/engine.py" "${SWEEP[@]}" --weights "$WORK/weights" --out "$OUT/engine.json" > "$OUT/engine.log" 2>&1; then
    log "sweep done"
    sed '/^{/,$d' "$OUT/engine.log"  # the sweep's tables (the JSON after them is in engine.json)
else
    STATUS=1
    tail -40 "$OUT/engine.log"
    log "sweep FAILED (engine.log); going on with the other sections"
    "$PY" -c 'import json, sys; json.dump({"error": "bench/engine.py failed: see engine.log"}, open(sys.argv[1], "w"))' "$OUT/engine.json"
fi
EXTRA=()
[ "$DRY" = 1 ] && EXTRA=(--dry-run)
"$PY" "$ROOT/bench/device_check.py" --weights "$WORK/weights" --engine-json "$OUT/engine.json" --out "$OUT" "${EXTRA[@]}" || STATUS=1
log "device_check.py done"
# 4. Why the speed is what it is: each network per precision, autotuning and layout, the
# background compiled, and the engine's steps as the device spends them (~3 minutes on an H200).
if [ "$DRY" = 0 ]; then EXTRA=(--compile); fi
"$PY" "$ROOT/bench/gpu_variants.py" --weights "$WORK/weights" --out "$OUT" "${EXTRA[@]}" || STATUS=1
log "done (status $STATUS): $(ls "$OUT" | tr '\n' ' ')"
exit "$STATUS"
