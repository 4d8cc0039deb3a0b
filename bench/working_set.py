"""The working-set factors of processor/admission.py, measured: peak memory of one image's decode,
enhance and encode, each in a fresh interpreter, against what the estimate is built from.

- ``fast``: 2000 x 2000 inputs (8-bit RGB, 16-bit RGBA) at upscale 1, 2 and 4, to JPEG and PNG;
  the factor is the peak growth over the result's sample bytes (``FAST_FACTOR``);
- ``--network``: ``balanced`` (Real-ESRGAN x2plus, random weights, on the CPU) on 384 and 512 pixel
  RGB inputs; the figure is the peak growth per input pixel (``NETWORK_BYTES_PER_PIXEL``). Slow on
  a small CPU (about a minute), and needs torch.

Each row also gives :func:`processor.admission.estimate`, which must not be below the measured peak.

    .venv/bin/python bench/working_set.py [--network]

Prints one JSON document, then a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

#: One measurement, run by a fresh interpreter: argv = level, edge, layout, upscale, format, weights folder.
PROBE = r"""
import io, json, resource, sys
from pathlib import Path
import cv2
import numpy as np
from PIL import Image
from photoenhance.contracts.options import EnhanceOptions, Quality
from photoenhance.settings import Settings
from processor.admission import estimate
from processor.engine import Engine
from processor.engine.header import read_header
from processor.engine.imageio import decode_image, encode_image
from processor.engine.records import EnhanceRequest

level, edge, layout = sys.argv[1], int(sys.argv[2]), sys.argv[3]
upscale, fmt, weights = float(sys.argv[4]), sys.argv[5], sys.argv[6]

def data_of(edge, layout):
    if layout == "rgba16":
        pixels = np.zeros((edge, edge, 4), np.uint16); pixels[::7, ::5] = 40000
        return cv2.imencode(".png", pixels)[1].tobytes()
    pixels = np.random.default_rng(0).integers(0, 255, (edge, edge, 3)).astype(np.uint8)
    buffer = io.BytesIO(); Image.fromarray(pixels).save(buffer, "PNG"); return buffer.getvalue()

if level != "fast" and not (Path(weights) / "RealESRGAN_x2plus.pth").exists():
    from harness.weights import write_random_weights
    write_random_weights(Path(weights))
engine = Engine.load(Settings(weights_dir=Path(weights), device="cpu", allow_custom_weights=True), qualities=[Quality(level)])
options = EnhanceOptions.from_dict({"quality": level, "upscale": upscale, "output_format": fmt})

def run(data):
    decoded = decode_image(data, max_pixels=10**9)
    result = engine.enhance_batch([EnhanceRequest(decoded, options)])[0]
    del decoded
    encode_image(result.pixels, options)

run(data_of(16, layout))  # first use: codecs, tables, the inference thread
data = data_of(edge, layout)
before = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, int(open("/proc/self/statm").read().split()[1]) * 4) * 1024
run(data)
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
header = read_header(data, max_pixels=10**9)
print(json.dumps({"grew": grew, "estimate": estimate(header, options).host, "pixels": edge * edge,
                  "result_sample_bytes": int(edge * upscale) ** 2 * header.channels * header.bytes_per_sample}))
"""

def probe(level: str, edge: int, layout: str, upscale: float, fmt: str, weights: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, level, str(edge), layout, str(upscale), fmt, str(weights)],
        cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=900, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    found = json.loads(done.stdout.strip().splitlines()[-1])
    row = {"level": level, "edge": edge, "layout": layout, "upscale": upscale, "format": fmt, **found}
    row["per_result_sample_byte"] = round(found["grew"] / found["result_sample_bytes"], 2)
    row["per_input_pixel"] = round(found["grew"] / found["pixels"], 1)
    row["estimate_covers"] = found["estimate"] >= found["grew"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--network", action="store_true", help="also measure balanced (slow, needs torch)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="pe-working-set-") as tmp:
        weights = Path(tmp) / "weights"
        for layout in ("rgb8", "rgba16"):
            for upscale in (1.0, 2.0, 4.0):
                for fmt in ("jpeg", "png"):
                    rows.append(probe("fast", 2000, layout, upscale, fmt, weights))
        if args.network:
            for edge in (384, 512):
                rows.append(probe("balanced", edge, "rgb8", 2.0, "jpeg", weights))
    print(json.dumps({"rows": rows}, indent=2))
    print()
    print("| level | input | upscale | format | peak growth MiB | per result sample byte | per input pixel "
          "| estimate MiB | covers |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['level']} | {r['edge']}² {r['layout']} | {r['upscale']:g} | {r['format']} | {r['grew'] / 2**20:.0f} "
              f"| {r['per_result_sample_byte']} | {r['per_input_pixel']} | {r['estimate'] / 2**20:.0f} "
              f"| {r['estimate_covers']} |")


if __name__ == "__main__":
    main()
