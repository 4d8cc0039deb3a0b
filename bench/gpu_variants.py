"""Which settings make the device path fast: each network under each cuDNN, precision and layout
choice, then the engine end to end with cuDNN's autotuning off and on.

    python bench/gpu_variants.py --weights DIR --out DIR [--dry-run] [--compile]

The first device check on an H200 (docs/BENCHMARKS.md, GPU) put the engine at 10 images/s at
``best``; this run asks why, in one short call:

1. Real-ESRGAN on 1-megapixel pictures, fp16 and bf16, cuDNN autotuning off and on, channels-last
   and contiguous, timed with CUDA events; the first call at a new picture size when autotuning
   (what a worker pays per new size); with ``--compile``, eager against torch.compile.
2. GFPGAN, ParseNet and the soft mask on 16 faces, per precision, autotuning off and on.
3. The engine at ``best`` on 1-megapixel single-face portraits at micro-batch 1, 8 and 16, and
   ``balanced`` at 16, autotuning off and on: images/s from unsynchronised calls, each step's
   device time from one more call with ENGINE_STEP_SYNC.

Every section records its error instead of stopping the rest. ``--dry-run``: the CPU, toy sizes.
Writes OUT/gpu_variants.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import flops  # noqa: E402
from bench.device_check import portraits  # noqa: E402
from bench.engine import image_flops, make_images, sync_device, timed_call  # noqa: E402
from bench.gpu_busy import GpuBusy  # noqa: E402
from bench.sections import Sections  # noqa: E402
from bench.sweep import summarize  # noqa: E402
from photoenhance.contracts.options import EnhanceOptions, Quality  # noqa: E402
from photoenhance.settings import Settings  # noqa: E402
from processor.engine import Engine, EnhanceRequest, device_ops  # noqa: E402
from processor.engine.device import resolve_device  # noqa: E402
from processor.engine.imageio import DecodedImage  # noqa: E402
from processor.engine.precision import allow_tf32, autocast, precision_dtype  # noqa: E402


def _timed_ms(device: torch.device, call: Callable[[], object], *, warm: int, repeats: int) -> dict[str, float]:
    """Milliseconds of the first call, and the mean of ``repeats`` calls after ``warm`` more."""
    def once() -> float:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        began = time.perf_counter()
        call()
        return (time.perf_counter() - began) * 1000.0
    first = once()
    for _ in range(warm):
        once()
    times = [once() for _ in range(repeats)]
    return {"first_ms": round(first, 2), "ms": round(sum(times) / len(times), 3)}


def background_variants(engine: Engine, device: torch.device, size: int, batch: int, gflop: float) -> list[dict[str, Any]]:
    """Real-ESRGAN alone on ``batch`` pictures of ``size`` squared, per dtype, autotuning and layout."""
    module = engine._pipeline.models.background.module
    pictures = torch.rand(batch, 3, size, size, device=device)
    dtypes = ("fp16", "bf16") if device.type == "cuda" else ("fp32",)
    rows = []
    for choice in dtypes:
        for tuned in (False, True):
            for layout in ("channels_last", "contiguous"):
                torch.backends.cudnn.benchmark = tuned
                memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
                module.to(dtype=precision_dtype(choice), memory_format=memory_format)
                x = pictures.to(precision_dtype(choice)).contiguous(memory_format=memory_format)
                with torch.no_grad():
                    timing = _timed_ms(device, lambda x=x: module(x), warm=1, repeats=3)
                ms = timing["ms"] / batch
                rows.append({"precision": choice, "cudnn_benchmark": tuned, "layout": layout,
                             "ms_per_image": round(ms, 2), "first_call_ms": timing["first_ms"],
                             "tflops": round(gflop / ms, 1)})
                print(f"  background {choice} benchmark={tuned} {layout}: {ms:.2f} ms/image, "
                      f"{gflop / ms:.1f} TFLOP/s", flush=True)
    if device.type == "cuda":  # what a worker pays the first time it meets a picture size, autotuning
        torch.backends.cudnn.benchmark = True
        module.to(dtype=torch.float16, memory_format=torch.channels_last)
        odd = torch.rand(1, 3, size - 24, size + 40, device=device, dtype=torch.float16).contiguous(
            memory_format=torch.channels_last)
        with torch.no_grad():
            timing = _timed_ms(device, lambda: module(odd), warm=1, repeats=2)
        rows.append({"new_size": [size - 24, size + 40], "cudnn_benchmark": True, "first_call_ms": timing["first_ms"],
                     "ms_per_image": timing["ms"]})
        print(f"  background at a new size, autotuning: first call {timing['first_ms']:.0f} ms, then {timing['ms']:.1f}",
              flush=True)
    torch.backends.cudnn.benchmark = False
    chosen = getattr(engine._pipeline, "precisions", {}).get("background", "fp32")  # the reference path has none
    module.to(dtype=precision_dtype(chosen), memory_format=torch.channels_last)
    return rows


def background_compiled(engine: Engine, device: torch.device, size: int, batch: int) -> dict[str, Any]:
    """Real-ESRGAN eager and under ``torch.compile`` (default mode, one fixed shape), at the engine's
    background precision, channels-last: ms per image each and the seconds the compile took."""
    module = engine._pipeline.models.background.module
    dtype = next(module.parameters()).dtype
    x = torch.rand(batch, 3, size, size, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        eager = _timed_ms(device, lambda: module(x), warm=1, repeats=3)
        began = time.perf_counter()
        compiled = torch.compile(module, dynamic=False)
        compiled(x)
        sync_device(device)
        compile_s = time.perf_counter() - began
        fast = _timed_ms(device, lambda: compiled(x), warm=1, repeats=3)
    row = {"batch": batch, "size": size, "eager_ms_per_image": round(eager["ms"] / batch, 2),
           "compiled_ms_per_image": round(fast["ms"] / batch, 2), "compile_s": round(compile_s, 1)}
    print(f"  background eager {row['eager_ms_per_image']} ms/image, compiled {row['compiled_ms_per_image']} "
          f"(compile {row['compile_s']} s)", flush=True)
    return row


def face_variants(engine: Engine, device: torch.device, faces: int) -> list[dict[str, Any]]:
    """GFPGAN, ParseNet and the soft mask on ``faces`` 512-pixel faces, per precision and autotuning."""
    models = engine._pipeline.models
    x = torch.rand(faces, 3, 512, 512, device=device) * 2 - 1
    precisions = ("tf32", "bf16", "fp16") if device.type == "cuda" else ("fp32",)
    rows = []
    for tuned in (False, True):
        torch.backends.cudnn.benchmark = tuned
        for choice in precisions:
            allow_tf32(choice == "tf32")
            with torch.no_grad(), autocast(choice, device):
                restore = _timed_ms(device, lambda: models.restorer(x, return_rgb=False, randomize_noise=False),
                                    warm=1, repeats=3)
                parse = _timed_ms(device, lambda: models.parser(x)[0].argmax(dim=1), warm=1, repeats=3)
            rows.append({"cudnn_benchmark": tuned, "precision": choice,
                         "restorer_ms_per_face": round(restore["ms"] / faces, 3),
                         "parser_ms_per_face": round(parse["ms"] / faces, 3)})
            print(f"  faces benchmark={tuned} {choice}: restorer {restore['ms'] / faces:.2f} ms/face, "
                  f"parser {parse['ms'] / faces:.2f}", flush=True)
        classes = torch.randint(0, 19, (faces, 512, 512), device=device)
        mask = _timed_ms(device, lambda c=classes: device_ops.mask_from_classes(c), warm=1, repeats=3)
        rows.append({"cudnn_benchmark": tuned, "mask_ms_per_face": round(mask["ms"] / faces, 3)})
        print(f"  soft mask benchmark={tuned}: {mask['ms'] / faces:.2f} ms/face", flush=True)
    torch.backends.cudnn.benchmark = False
    allow_tf32(True)
    return rows


def engine_runs(weights: Path, device: torch.device, size: int, batches: list[int]) -> list[dict[str, Any]]:
    """The engine at ``best`` (and ``balanced`` at the largest batch), cuDNN autotuning off and on:
    images/s over three calls as the worker makes them, then the device's time per step from one
    call waiting for the device at each step (ENGINE_STEP_SYNC, switched on the loaded engine)."""
    rows = []
    for tuned in (False, True):
        engine = Engine.load(Settings(weights_dir=weights, allow_custom_weights=True, device=str(device),
                                      engine_cudnn_benchmark=tuned), qualities=[Quality.BEST, Quality.BALANCED])
        for quality, sizes in ((Quality.BEST, batches), (Quality.BALANCED, batches[-1:])):
            for batch in sizes:
                if quality is Quality.BEST:
                    requests = portraits(batch, size)
                else:
                    options = EnhanceOptions(quality=Quality.BALANCED, upscale=2)
                    requests = [EnhanceRequest(DecodedImage(p, "png", size, size, False, 8), options)
                                for p in make_images(batch, size, seed=7)]
                timed_call(engine, requests, device)  # warm-up (and autotuning)
                for sync, calls in ((False, 3), (True, 1)):
                    engine._pipeline.step_sync = sync
                    with GpuBusy(device) as busy:
                        timed = [timed_call(engine, requests, device) for _ in range(calls)]
                    engine._pipeline.step_sync = False
                    entry = summarize(batch, [t[0] for t in timed], [r.report for t in timed for r in t[2]])
                    row = {"quality": quality.value, "batch": batch, "cudnn_benchmark": tuned, "step_sync": sync,
                           "images_per_s": round(entry["images_per_s"], 3), **busy.summary()}
                    if sync:  # the device's own time per step, per image
                        row["step_ms_per_image"] = entry["step_ms_per_image"]
                    rows.append(row)
                    print(f"  engine {quality.value} B={batch} benchmark={tuned} sync={sync}: "
                          f"{row['images_per_s']} images/s" + (f" steps {row.get('step_ms_per_image')}" if sync else ""),
                          flush=True)
        engine.close()
    torch.backends.cudnn.benchmark = False
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--compile", action="store_true", help="also time the background under torch.compile")
    args = parser.parse_args(argv)
    device = resolve_device("cpu" if args.dry_run else "auto")
    size, faces, batches = (64, 1, [1]) if args.dry_run else (1024, 16, [1, 8, 16])
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "size": size,
                              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    sections = Sections(result, args.out / "gpu_variants.json", "gpu_variants")

    engine = Engine.load(Settings(weights_dir=args.weights, allow_custom_weights=True, device=str(device)),
                         qualities=[Quality.BEST])
    counter = flops.NetworkFlops(engine._pipeline.models.background.key, faces=True)
    counts = image_flops(counter, engine, Quality.BEST, size, 1, 0)
    result["gflop_per_image"] = {k: round(v / 1e9, 2) for k, v in counts.items()}
    sections.run("background", lambda: background_variants(engine, device, size, 1 if args.dry_run else 4,
                                                       counts["background"] / 1e9))
    sections.run("faces", lambda: face_variants(engine, device, faces))
    if args.compile:  # a minute or more on an H200: asked for, not by default
        sections.run("background_compiled", lambda: background_compiled(engine, device, size, 1 if args.dry_run else 4))
    engine.close()
    sections.run("engine", lambda: engine_runs(args.weights, device, size, batches))
    print(json.dumps({"failed_sections": sections.failed}))
    return 1 if sections.failed else 0


if __name__ == "__main__":
    sys.exit(main())
