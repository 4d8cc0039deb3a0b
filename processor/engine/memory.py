"""Faces per forward and background tiles from a per-device memory budget.

On the CPU the limits are the measured ones of :meth:`Limits.for_device` (one face per forward).
On CUDA they follow from the budget (``DEVICE_MEMORY_BUDGET_MB``, or 80 % of the card): half of it
for the face networks, half for background windows. The per-item costs below are planning figures
for inference without gradients (GFPGAN v1.4 and ParseNet at 512 x 512, RRDBNet's activations per
input pixel); ``bench/device_check.sh`` measures the real peak memory per micro-batch to check them.
A wrong guess costs speed, not images: an out-of-memory error halves the forward and retries.
"""

from __future__ import annotations

import dataclasses

import torch

from processor.engine.batch_steps import Limits

__all__ = ["BACKGROUND_BYTES_PER_PIXEL", "FACE_BYTES", "limits_for_budget"]

#: Peak activation bytes of one 512 x 512 face through GFPGAN or ParseNet in float32.
FACE_BYTES = 600 * 2**20
#: Peak activation bytes per input pixel of a Real-ESRGAN window in float32.
BACKGROUND_BYTES_PER_PIXEL = 6 * 1024
_MAX_FACES, _MAX_TILES = 16, 8
_TILE_STEP = 64


def limits_for_budget(device: torch.device, budget_mb: int, precisions: dict[str, str],
                      *, total_bytes: int | None = None) -> Limits:
    """The :class:`Limits` for ``device`` under ``budget_mb`` (0: 80 % of ``total_bytes`` or the card's)."""
    base = Limits.for_device(device)
    if device.type != "cuda" and not budget_mb:
        return base
    if budget_mb:
        budget = budget_mb * 2**20
    else:
        total = total_bytes if total_bytes is not None else torch.cuda.get_device_properties(device).total_memory
        budget = int(total * 0.8)
    half = budget // 2
    face_bytes = FACE_BYTES // (2 if precisions.get("restorer") in ("bf16", "fp16") else 1)
    faces = max(1, min(_MAX_FACES, half // face_bytes))
    pixel_bytes = BACKGROUND_BYTES_PER_PIXEL // (2 if precisions.get("background") in ("bf16", "fp16") else 1)
    tiles = base.max_tiles_per_forward
    per_window = half // tiles
    side = int((per_window / pixel_bytes) ** 0.5)
    tile = max(_TILE_STEP, side // _TILE_STEP * _TILE_STEP)
    return dataclasses.replace(base, max_faces_per_forward=min(faces, base.max_faces_per_forward) if device.type != "cuda"
                               else faces, oom_first_tile=tile, max_tiles_per_forward=min(tiles, _MAX_TILES))
