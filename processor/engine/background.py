"""Step 4: upsample backgrounds with Real-ESRGAN, in tiles that several images share a forward with.

Numerically this follows ``RealESRGANer.enhance``: values scaled to [0, 1], reflect pre-padding on
the right and bottom, reflect padding to the network's multiple, clamped output, alpha upsampled by
the same network as a grey picture, rounding to 8 or 16 bits, then Lanczos to the requested scale.

Tiling differs on purpose. Every tile is cut as a fixed-size window lying wholly inside the picture:
its core (the part kept) plus ``pad`` pixels of context on each side, shifted inwards at the
picture's edges instead of being cut short. Windows then all have one shape, so the windows of all
images of a micro-batch are stacked into shared forwards, and a window touches the picture's edge
exactly where the untiled network would, so edge pixels see the same zero padding either way.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from processor.engine.networks import BackgroundNet
from processor.engine.resize import lanczos_resize

__all__ = [
    "Window",
    "assemble",
    "plan_windows",
    "prepare_planes",
    "finish_planes",
    "upsample_planes",
]

#: Reflect padding added on the right and bottom before inference (the reference's ``pre_pad``).
PRE_PAD = 10


@dataclass(frozen=True)
class Window:
    """One tile: the window fed to the network and the core of it that is kept (input pixels)."""

    #: (top, left, height, width) of the window in the padded plane.
    window: tuple[int, int, int, int]
    #: (top, left, height, width) of the kept core in the padded plane.
    core: tuple[int, int, int, int]


def prepare_planes(pixels: np.ndarray) -> list[np.ndarray]:
    """The RGB float32 planes in [0, 1] to upsample: the colour, then the alpha as grey, if any."""
    top = 65535.0 if pixels.dtype == np.uint16 else 255.0
    values = pixels.astype(np.float32) / np.float32(top)
    if values.shape[2] == 1:
        return [np.repeat(values, 3, axis=2)]
    planes = [np.ascontiguousarray(values[:, :, :3])]
    if values.shape[2] == 4:
        planes.append(np.repeat(values[:, :, 3:4], 3, axis=2))
    return planes


def finish_planes(
    outputs: Sequence[np.ndarray], channels: int, dtype: np.dtype, size: tuple[int, int]
) -> np.ndarray:
    """Upsampled planes back to the input's layout and dtype, resized to ``size`` = (width, height)."""
    colour = outputs[0]
    if channels == 1:
        merged = cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY)[:, :, None]
    elif channels == 4:
        alpha = cv2.cvtColor(outputs[1], cv2.COLOR_RGB2GRAY)[:, :, None]
        merged = np.concatenate([colour, alpha], axis=2)
    else:
        merged = colour
    top = 65535.0 if dtype == np.uint16 else 255.0
    rounded = (merged * top).round().astype(dtype)
    return lanczos_resize(rounded, size)


def plan_windows(height: int, width: int, *, tile: int, pad: int, multiple: int = 1) -> list[Window]:
    """Cut a ``height`` x ``width`` plane into same-size windows around ``tile``-sized cores.

    ``tile`` 0 (or a tile covering the plane) gives one window, the whole plane. Sizes and offsets
    stay multiples of ``multiple``; ``height`` and ``width`` must already be.
    """
    if tile <= 0 or (tile >= height and tile >= width):
        return [Window((0, 0, height, width), (0, 0, height, width))]
    tile = max(multiple, tile // multiple * multiple)
    pad = -(-pad // multiple) * multiple
    rows = _axis(height, tile, pad)
    cols = _axis(width, tile, pad)
    return [Window((wy, wx, wh, ww), (cy, cx, ch, cw))
            for (wy, wh, cy, ch) in rows for (wx, ww, cx, cw) in cols]


def _axis(length: int, tile: int, pad: int) -> list[tuple[int, int, int, int]]:
    """(window start, window size, core start, core size) along one axis."""
    size = min(tile + 2 * pad, length)
    spans = []
    for index in range(math.ceil(length / tile)):
        core_start = index * tile
        core_size = min(tile, length - core_start)
        start = min(max(core_start - pad, 0), length - size)
        spans.append((start, size, core_start, core_size))
    return spans


def _pad_plane(plane: np.ndarray, multiple: int, pre_pad: int) -> torch.Tensor:
    """(1, 3, H', W') tensor: reflect pre-padding, then reflect padding up to ``multiple``."""
    x = torch.from_numpy(np.ascontiguousarray(plane.transpose(2, 0, 1))).unsqueeze(0)
    if pre_pad:
        x = F.pad(x, (0, pre_pad, 0, pre_pad), "reflect")
    if multiple > 1:
        height, width = x.shape[2:]
        x = F.pad(x, (0, (-width) % multiple, 0, (-height) % multiple), "reflect")
    return x


def upsample_planes(
    net: BackgroundNet,
    planes: Sequence[np.ndarray],
    device: torch.device,
    *,
    tiles: Sequence[int],
    pad: int | None = None,
    pre_pad: int = PRE_PAD,
    max_batch: int = 4,
    dtype: torch.dtype = torch.float32,
) -> list[np.ndarray]:
    """Upsample every plane by ``net.scale``; ``tiles[i]`` is plane i's tile edge (0: whole plane).

    ``pad`` is each tile's context in input pixels, by default the network's own (``net.context``).

    Windows of equal shape, from any plane, share forwards of at most ``max_batch``. Returns
    (H*s, W*s, 3) float32 arrays clamped to [0, 1].
    """
    pad = net.context if pad is None else pad
    padded = [_pad_plane(plane, net.multiple, pre_pad) for plane in planes]
    plans = [plan_windows(x.shape[2], x.shape[3], tile=tile, pad=pad, multiple=net.multiple)
             for x, tile in zip(padded, tiles)]
    outputs = [torch.zeros(3, x.shape[2] * net.scale, x.shape[3] * net.scale) for x in padded]
    by_shape: dict[tuple[int, int], list[tuple[int, Window]]] = defaultdict(list)
    for index, plan in enumerate(plans):
        for window in plan:
            by_shape[window.window[2:]].append((index, window))
    for jobs in by_shape.values():
        for start in range(0, len(jobs), max_batch):
            chunk = jobs[start:start + max_batch]
            crops = [_crop(padded[i], window) for i, window in chunk]
            result = run_network(net, torch.stack(crops), device, dtype)
            for (index, window), tile_out in zip(chunk, result):
                assemble(outputs[index], tile_out, window, net.scale)
    height_width = [(plane.shape[0], plane.shape[1]) for plane in planes]
    return [out[:, :h * net.scale, :w * net.scale].clamp_(0, 1).numpy().transpose(1, 2, 0)
            for out, (h, w) in zip(outputs, height_width)]


def _crop(padded: torch.Tensor, window: Window) -> torch.Tensor:
    y, x, h, w = window.window
    return padded[0, :, y:y + h, x:x + w]


def run_network(net: BackgroundNet, batch: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """One forward of a batch of windows; returns float32 on the CPU."""
    x = batch.to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        return net.module(x).float().cpu()


def assemble(canvas: torch.Tensor, tile_out: torch.Tensor, window: Window, scale: int) -> None:
    """Copy the core of one upsampled window into the (3, H*s, W*s) ``canvas``."""
    wy, wx, _, _ = window.window
    cy, cx, ch, cw = window.core
    oy, ox = (cy - wy) * scale, (cx - wx) * scale
    canvas[:, cy * scale:(cy + ch) * scale, cx * scale:(cx + cw) * scale] = \
        tile_out[:, oy:oy + ch * scale, ox:ox + cw * scale]
