"""Benchmark: the engine against the stock ``GFPGANer`` loop on the same images.

    .venv/bin/python bench/engine.py [--images 4] [--size 192] [--batch 4] [--weights DIR] [--out FILE]

Both sides run the ``best`` pipeline (RetinaFace landmarks given, GFPGAN v1.4 faces, ParseNet mask,
Real-ESRGAN x2plus background) with the same weights and StyleGAN noise fixed on both; the engine
takes the images in micro-batches, the stock side one ``enhance`` call per image. Prints a short
table and JSON (images/s of each side, their ratio, the largest output difference). Without
``--weights`` it writes random weights in the real formats to a temporary folder, so it runs
offline. The same script runs on a GPU machine unchanged (``--device auto`` picks CUDA) and there
also measures each network's float16-vs-float32 difference to check ``processor.engine.precision``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from photoenhance.contracts.options import EnhanceOptions, Quality  # noqa: E402
from photoenhance.settings import Settings  # noqa: E402
from processor.engine import Engine, EnhanceRequest  # noqa: E402
from processor.engine.imageio import DecodedImage  # noqa: E402
from tests.support.weights import give_landmarks, stock_gfpganer, write_random_weights  # noqa: E402


def make_images(count: int, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` smooth random RGB pictures, each with one face's landmarks, shifted per image."""
    images = []
    for index in range(count):
        rng = np.random.default_rng(100 + index)
        pixels = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (7, 7), 2)
        base = np.array([[50, 55], [78, 55], [64, 70], [53, 85], [75, 85]], np.float32)
        images.append((np.round(pixels * 255).astype(np.uint8), (base + [index % 5, 0]) * (size / 128)))
    return images


def run_engine(engine: Engine, images, batch: int, options: EnhanceOptions) -> tuple[float, list[np.ndarray]]:
    requests = [EnhanceRequest(DecodedImage(p, "png", p.shape[1], p.shape[0], False, 8), options, faces=[lm])
                for p, lm in images]
    engine.enhance_batch(requests[:1])  # warm-up: first-call allocations and kernel choices
    _sync()
    started = time.perf_counter()
    outputs = []
    for start in range(0, len(requests), batch):
        outputs += [r.pixels for r in engine.enhance_batch(requests[start:start + batch])]
    _sync()
    return time.perf_counter() - started, outputs


def run_stock(restorer, images) -> tuple[float, list[np.ndarray]]:
    first, landmarks = images[0]
    give_landmarks(restorer, [landmarks])
    restorer.enhance(np.ascontiguousarray(first[:, :, ::-1]), paste_back=True)  # warm-up
    _sync()
    started = time.perf_counter()
    outputs = []
    for pixels, landmarks in images:
        give_landmarks(restorer, [landmarks])
        _, _, out = restorer.enhance(np.ascontiguousarray(pixels[:, :, ::-1]), paste_back=True)
        outputs.append(out[:, :, ::-1])
    _sync()
    return time.perf_counter() - started, outputs


def precision_check(engine: Engine, size: int) -> dict[str, float]:
    """Largest float16-vs-float32 output difference of each network, in 8-bit levels (CUDA only)."""
    models = engine._pipeline.models
    device = engine._pipeline.device
    torch.manual_seed(0)
    face = torch.rand(2, 3, 512, 512, device=device) * 2 - 1
    picture = torch.rand(2, 3, size, size, device=device)
    probes = {
        "restorer": (models.restorer, face, lambda m, x: m(x, return_rgb=False, randomize_noise=False)[0], 127.5),
        "parser": (models.parser, face, lambda m, x: m(x)[0].softmax(1), 255.0),
        "detector": (models.detector, picture * 255, lambda m, x: m(x)[1], 255.0),
        "background": (models.background.module, picture, lambda m, x: m(x), 255.0),
    }
    found = {}
    for name, (module, x, call, levels) in probes.items():
        with torch.no_grad():
            module.float()
            full = call(module, x.float()).float()
            module.half()
            half = call(module, x.half()).float()
            module.float()
        found[name] = round(float((full - half).abs().nan_to_num(1e9).max()) * levels, 3)
    models.background.module.to(dtype=torch.float16)  # back to the engine's choice for the background
    return found


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=192, help="picture side in pixels")
    parser.add_argument("--batch", type=int, default=4, help="engine micro-batch size")
    parser.add_argument("--weights", type=Path, help="weights folder (default: random weights, written now)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-stock", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    scratch = tempfile.TemporaryDirectory(prefix="bench-engine-")
    weights = args.weights or write_random_weights(Path(scratch.name) / "weights")
    settings = Settings(weights_dir=weights, allow_custom_weights=True, device=args.device)
    images = make_images(args.images, args.size)
    options = EnhanceOptions(quality=Quality.BEST, upscale=2, fidelity=1.0)

    engine = Engine.load(settings, qualities=[Quality.BEST])
    engine_s, engine_out = run_engine(engine, images, args.batch, options)
    result = {
        "device": engine.device,
        "torch_threads": torch.get_num_threads(),
        "images": args.images, "size": args.size, "faces_per_image": 1, "micro_batch": args.batch,
        "engine": {"seconds": round(engine_s, 3), "images_per_s": round(args.images / engine_s, 4)},
    }
    if engine.device.startswith("cuda"):
        result["fp16_vs_fp32_max_levels"] = precision_check(engine, min(args.size, 256))
    engine.close()

    if not args.skip_stock:
        workdir = Path(scratch.name) / "stock"
        workdir.mkdir()
        previous = os.getcwd()
        os.chdir(workdir)
        try:
            stock = stock_gfpganer(weights, workdir, device=result["device"])
            stock_s, stock_out = run_stock(stock, images)
        finally:
            os.chdir(previous)
        result["stock"] = {"seconds": round(stock_s, 3), "images_per_s": round(args.images / stock_s, 4)}
        result["ratio_engine_over_stock"] = round(stock_s / engine_s, 3)
        result["max_abs_diff"] = int(max(np.abs(a.astype(int) - b.astype(int)).max()
                                         for a, b in zip(engine_out, stock_out)))

    print(f"{'side':<8}{'seconds':>10}{'images/s':>12}")
    for side in ("engine", "stock"):
        if side in result:
            print(f"{side:<8}{result[side]['seconds']:>10.2f}{result[side]['images_per_s']:>12.4f}")
    if "ratio_engine_over_stock" in result:
        print(f"ratio (engine/stock throughput): {result['ratio_engine_over_stock']:.3f}; "
              f"max abs diff {result['max_abs_diff']} levels")
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
