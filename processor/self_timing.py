"""A worker's first speed figures, measured at start-up before it takes any work.

Estimates (``GET /api/v1/capabilities``, the page, the CLI) come from the speeds workers report
with their heartbeat (:mod:`processor.speeds`). Without a first figure a fresh fleet answers
"unknown" until each level has finished a real image, which is exactly when a person choosing a
level needs it most. So each level is timed once on a small synthetic photo before the worker
announces itself: one run to warm up (first allocations, kernel selection on a GPU), one timed.

The picture has no faces, so the figure covers detection and the background model, not face
restoration; the running mean of real images takes over from it within a few images.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from photoenhance.contracts.options import EnhanceOptions, Quality
from processor.engine.errors import ImageError
from processor.engine.imageio import DecodedImage
from processor.engine.records import EnhanceRequest
from processor.speeds import MIN_MEGAPIXELS, SpeedMeter, engine_seconds

__all__ = ["SAMPLE_EDGE", "SAMPLE_EDGES", "sample_photo", "time_levels"]

log = logging.getLogger(__name__)

#: Edge of the square sample, in pixels: exactly the smallest size the speed meter counts at
#: face value (MIN_MEGAPIXELS), so the figure is not inflated by the floor, and small enough that
#: the slowest level on a CPU (balanced, ~300 s per megapixel here) takes a few seconds.
SAMPLE_EDGE = round((MIN_MEGAPIXELS * 1e6) ** 0.5)

#: ``fast`` is a resize: on a 100-pixel sample its fixed cost per image dominated and the figure
#: came out 3x what 1-megapixel photos took (bench/estimates.py), so it is timed on one megapixel.
SAMPLE_EDGES = {"fast": 1000}


def sample_photo(edge: int = SAMPLE_EDGE) -> DecodedImage:
    """A photo-like RGB picture: smooth gradients with fine noise (a flat one would flatter a model)."""
    rng = np.random.default_rng(13)
    ramp = np.linspace(0, 1, edge, dtype=np.float32)
    red = np.outer(ramp, np.ones(edge, np.float32))
    green = np.outer(np.ones(edge, np.float32), ramp)
    blue = 0.5 + 0.5 * np.sin(6 * np.pi * red * green)
    planes = np.stack([red, green, blue], axis=-1) * 200 + rng.normal(0, 12, (edge, edge, 3))
    pixels = np.clip(planes, 0, 255).astype(np.uint8)
    return DecodedImage(pixels, "png", width=edge, height=edge, has_alpha=False, bit_depth=8)


async def time_levels(engine: Any, levels: Iterable[str], speeds: SpeedMeter) -> dict[str, float]:
    """Time each level on :func:`sample_photo` and record it in ``speeds``; returns seconds per
    megapixel per level. A level whose run fails is left unmeasured (logged), never fatal: the
    worker serves it anyway and its real images will measure it."""
    measured: dict[str, float] = {}
    for level in levels:
        photo = sample_photo(SAMPLE_EDGES.get(level, SAMPLE_EDGE))
        request = EnhanceRequest(photo, EnhanceOptions(quality=Quality(level)))
        await engine.enhance_batch_async([request])  # warm-up
        began = time.perf_counter()
        [outcome] = await engine.enhance_batch_async([request])
        seconds = time.perf_counter() - began
        if isinstance(outcome, ImageError):
            log.warning("self-timing of %s failed (%s); its speed stays unknown until it processes an image",
                        level, outcome)
            continue
        speeds.observe(level, engine_seconds(outcome.report, seconds), photo.width * photo.height)
        measured[level] = speeds.snapshot()[level]
    if measured:
        log.info("self-timing: %s", ", ".join(f"{level} {value:.3g} s/MP" for level, value in measured.items()))
    return measured
