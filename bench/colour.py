"""Colour accuracy of profiled inputs through ``fast``: ΔE2000 between the input and the result
(brought back to the input's size), with the profile handled as the worker does and with it
dropped as the worker did before issue 16.

Inputs (PNG, lossless, made in harness/pictures.py): Display P3 and Adobe RGB (1998)
profiles built by Little CMS; two patch sets each:

- ``in-sRGB``: saturated sRGB primaries, secondaries, mixtures and greys written in the wide space
  (every colour the sRGB result can hold);
- ``full``: the same numbers written as they are in the wide space: its own primaries, partly
  outside sRGB, which the conversion to sRGB clips and the worker adds back into a result in the
  input's profile (processor/engine/colour.py).

Patch interiors only (a 4-pixel margin of each 16-pixel patch is left out: Lanczos rings at the
hard edges in any space). CPU-only and deterministic; no timing.

    PYTHONPATH=$PWD .venv/bin/python -m bench.colour [--json docs/bench/colour.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from harness.pictures import adobe_rgb_icc, delta_e, display_p3_icc, profiled_patches, without_profile
from photoenhance.contracts.options import EnhanceOptions, Quality
from processor.engine.fast import fast_result
from processor.engine.imageio import decode_image, encode_image
from processor.engine.records import EnhanceRequest

PROFILES = {"Display P3": display_p3_icc, "Adobe RGB (1998)": adobe_rgb_icc}


def through_fast(data: bytes, upscale: float = 2.0) -> bytes:
    """``data`` through decode, the ``fast`` level and encode, as a worker does (output auto)."""
    decoded = decode_image(data, max_pixels=100_000_000)
    options = EnhanceOptions(quality=Quality.FAST, upscale=upscale)
    result = fast_result(EnhanceRequest(decoded, options))
    return encode_image(result.pixels, options, decoded).data


def measure() -> list[dict[str, object]]:
    """One row per (profile, patch set, handling): mean, max and p95 ΔE2000."""
    rows = []
    for name, profile in PROFILES.items():
        for patch_set, in_srgb in (("in-sRGB", True), ("full", False)):
            data = profiled_patches(profile(), in_srgb=in_srgb)
            handlings = (("handled (sRGB for the level, wide colours kept)", data),
                         ("profile dropped", without_profile(data)))
            for handling, source in handlings:
                values = delta_e(data, through_fast(source))
                rows.append({
                    "profile": name, "patches": patch_set, "handling": handling,
                    "mean": round(float(values.mean()), 2), "p95": round(float(np.percentile(values, 95)), 2),
                    "max": round(float(values.max()), 2),
                })
    return rows


def table(rows: list[dict[str, object]]) -> str:
    """A Markdown table of :func:`measure`'s rows."""
    lines = ["| input profile | patches | handling | mean ΔE2000 | p95 | max |", "|---|---|---|---:|---:|---:|"]
    lines += [f"| {r['profile']} | {r['patches']} | {r['handling']} | {r['mean']} | {r['p95']} | {r['max']} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = measure()
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
