"""The device check's own measurements, beside bench/engine.py's sweep (see bench/device_check.sh).

    python bench/device_check.py --weights DIR --engine-json FILE --out DIR [--dry-run]

Measures what the sweep does not: the engine's cold start (load, optional compile, first image), peak
GPU memory per micro-batch at ``best``, each network's bf16 and fp16 difference from fp32
(processor.engine.precision_check), the device path against the reference path at ``best``; then
merges everything with the sweep's JSON into OUT/device_check.json and plots images/s per micro-batch
into OUT/device_check.png. ``--dry-run``: the same on the CPU at toy sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine import compare_paths, make_images  # noqa: E402
from bench.sections import Sections  # noqa: E402
from photoenhance.contracts.options import EnhanceOptions, Quality  # noqa: E402
from photoenhance.settings import Settings  # noqa: E402
from processor.engine import Engine, EnhanceRequest  # noqa: E402
from processor.engine.device import resolve_device  # noqa: E402
from processor.engine.imageio import DecodedImage  # noqa: E402
from processor.engine.precision_check import compare_precisions  # noqa: E402


def portraits(count: int, size: int) -> list[EnhanceRequest]:
    """Single-face portraits: the face given by landmarks covering the middle third."""
    points = np.array([[50, 55], [78, 55], [64, 70], [53, 85], [75, 85]], np.float32) * (size / 128)
    options = EnhanceOptions(quality=Quality.BEST, upscale=2, fidelity=1.0)
    return [EnhanceRequest(DecodedImage(pixels, "png", size, size, False, 8), options, faces=[points])
            for pixels in make_images(count, size, seed=60)]


def cold_start(weights: Path, device: torch.device, size: int, compile_mode: str) -> dict[str, Any]:
    """Seconds to load the engine (with compile and warm-up, if asked) and to enhance its first image."""
    started = time.perf_counter()
    engine = Engine.load(Settings(weights_dir=weights, allow_custom_weights=True, device=str(device),
                                  engine_compile=compile_mode), qualities=[Quality.BEST])
    loaded = time.perf_counter() - started
    engine.enhance_batch(portraits(1, size))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    first = time.perf_counter() - started - loaded
    compiled = getattr(engine._pipeline, "cold_start_s", 0.0)
    engine.close()
    return {"compile": compile_mode, "load_s": round(loaded, 2), "compile_and_warm_up_s": round(compiled, 2),
            "first_image_s": round(first, 2)}


def peak_memory(weights: Path, device: torch.device, size: int, batches: list[int]) -> dict[str, Any]:
    """Peak GPU memory (MiB) of one ``best`` call per micro-batch size.

    A CUDA figure: on the CPU (the dry run) each entry is None and no image is run, since there is
    nothing to measure; the memory-planned limits are reported either way.
    """
    engine = Engine.load(Settings(weights_dir=weights, allow_custom_weights=True, device=str(device)),
                         qualities=[Quality.BEST])
    peaks: dict[str, Any] = {}
    for batch in batches:
        if device.type != "cuda":
            peaks[str(batch)] = None
            continue
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        engine.enhance_batch(portraits(batch, size))
        peaks[str(batch)] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    limits = engine._pipeline.limits
    engine.close()
    note = "peak torch.cuda memory per micro-batch" if device.type == "cuda" else "None: the CPU has no CUDA peak"
    return {"peak_mib_by_micro_batch": peaks, "note": note, "limits": {"max_faces_per_forward": limits.max_faces_per_forward,
                                                          "max_tiles_per_forward": limits.max_tiles_per_forward,
                                                          "oom_first_tile": limits.oom_first_tile}}


def precision_rows(weights: Path, device: torch.device, size: int, precisions: tuple[str, ...]) -> list[dict[str, Any]]:
    engine = Engine.load(Settings(weights_dir=weights, allow_custom_weights=True, device=str(device)))
    rows = compare_precisions(engine._pipeline.models, device, size=size, precisions=precisions)
    engine.close()
    return rows


def plot(sweep: dict[str, Any], target: Path) -> None:
    """Images/s per micro-batch size for each quality level of the sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for quality, entries in sweep.items():
        axis.plot([e["batch"] for e in entries], [e["images_per_s"] for e in entries], marker="o", label=quality)
    axis.set_xscale("log", base=2)
    axis.set_xlabel("micro-batch (images)")
    axis.set_ylabel("images/s")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(target, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--engine-json", type=Path, required=True, help="bench/engine.py's JSON of this run")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    device = resolve_device("cpu" if args.dry_run else "auto")
    size, batches = (64, [1]) if args.dry_run else (1024, [1, 2, 4, 8, 16])  # 1024 x 1024: 1-MP portraits
    result: dict[str, Any] = {"device": str(device), "dry_run": args.dry_run,
                              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                              "torch": torch.__version__}
    result["engine"] = json.loads(args.engine_json.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    sections = Sections(result, args.out / "device_check.json", "device_check.py")
    result["cold_start"] = []
    sections.run("cold_start", lambda: cold_start(args.weights, device, size, "off"))
    # Peak memory is a CUDA figure; on the CPU (the dry run) it is None per micro-batch, stated as such.
    sections.run("memory", lambda: peak_memory(args.weights, device, size, batches))
    sections.run("precision", lambda: precision_rows(
        args.weights, device, 64 if args.dry_run else 512, ("bf16",) if args.dry_run else ("bf16", "fp16")),
        key="precision_vs_fp32")
    sections.run("paths", lambda: compare_paths(args.weights, device, size=size,
                                                rounds=1 if args.dry_run else 5, warm_up=not args.dry_run))
    # Opt-in (DEVICE_CHECK_COMPILE=1): on an H200 it took 294 s (docs/BENCHMARKS.md, GPU), more than
    # the rest of the check together; gpu_variants.py --compile times the background compiled instead.
    if device.type == "cuda" and os.environ.get("DEVICE_CHECK_COMPILE") == "1":
        sections.run("cold_start_compile", lambda: cold_start(args.weights, device, size, "compile"), key="cold_start")
    sweep = result["engine"].get("sweep", {})
    plot(sweep, args.out / "device_check.png")
    if "error" in result["engine"]:
        sections.failed.insert(0, "sweep")
    summary = {"best_images_per_s": {e["batch"]: e["images_per_s"] for e in sweep.get("best", [])},
               "best_gpu_busy": {e["batch"]: e.get("gpu_busy") for e in sweep.get("best", [])},
               "balanced_megapixels_per_s": {e["batch"]: e["megapixels_per_s"] for e in sweep.get("balanced", [])},
               "cold_start": result["cold_start"],
               "peak_memory": result["memory"].get("peak_mib_by_micro_batch", result["memory"].get("error")),
               "paths_ratio_reference_over_device": result["paths"].get("ratio_reference_over_device",
                                                                        result["paths"].get("error")),
               "failed_sections": sections.failed}
    print(json.dumps(summary, indent=2))
    return 1 if sections.failed else 0


if __name__ == "__main__":
    sys.exit(main())
