"""The face steps as torch operations, on whichever device the engine runs: warps, soft mask, blend.

These are the device path's versions of :mod:`processor.engine.align` and :mod:`processor.engine.paste`
(which use float64 NumPy and OpenCV, exact to the reference). They follow OpenCV's conventions so
the two paths agree within a level or two of 8 bits:

- ``cv2.warpAffine`` interpolates bilinearly between the four neighbours of each destination
  pixel's source position; outside the picture the neighbours take the border value. For float
  pictures it computes the positions in fixed point (1/1024 pixel, rounded per row and per column,
  then cut to 1/32 pixel), for 8-bit ones (OpenCV 4.11+) exactly. Here the same arithmetic gives the
  positions, and ``torch.nn.functional.grid_sample`` interpolates at
  them; a constant border is the sample of ``src - border`` with zero padding, plus ``border``.
- ``cv2.GaussianBlur`` with reflect-101 borders is two 1-D convolutions (``conv2d``) after
  ``F.pad(..., "reflect")`` (which is OpenCV's reflect-101).

Images are (N, C, H, W) float32 tensors holding 0-255 values, RGB throughout (the NumPy path keeps
OpenCV's BGR; the order only matters for the grey border fill).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "BORDER_GREY_RGB",
    "CLASS_MASK",
    "cv_source_positions",
    "gaussian_blur",
    "mask_from_classes",
    "warp_affine",
]

#: Crop fill outside the picture, as RGB (align.py's BGR grey).
BORDER_GREY_RGB = (132.0, 133.0, 135.0)
#: Mask value (0-255) of each ParseNet class (see :mod:`processor.engine.paste`).
CLASS_MASK = (0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0, 255, 0, 0, 0)
_BLUR_SIZE, _BLUR_SIGMA, _RIM = 101, 11, 10
#: OpenCV's warp arithmetic: source positions in 1/1024 pixel, interpolated in 1/32 steps.
_AB_SCALE, _SHIFT, _TAB_SIZE = 1024, 5, 32


def cv_source_positions(
    matrix: np.ndarray, height: int, width: int, *, origin: tuple[int, int] = (0, 0)
) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis parts of the source positions ``cv2.warpAffine(src, matrix, ...)`` reads, in 1/32 pixel.

    Returns ``(x_row, x_col)`` and ``(y_row, y_col)`` pairs packed as two (2, ...) int64 arrays:
    the source position of destination pixel (x0 + i, y0 + j) is
    ``(row[0][j] + col[0][i]) >> 5`` along x and ``(row[1][j] + col[1][i]) >> 5`` along y, in 1/32
    pixel, exactly as OpenCV rounds them (``origin`` = (x0, y0) evaluates a region of the picture
    the full-size warp would produce, without the full size).
    """
    inverse = cv2.invertAffineTransform(np.asarray(matrix, np.float64))
    x0, y0 = origin
    xs = np.arange(x0, x0 + width, dtype=np.float64)
    ys = np.arange(y0, y0 + height, dtype=np.float64)
    half_step = _AB_SCALE // _TAB_SIZE // 2
    cols = np.stack([np.rint(inverse[0, 0] * xs * _AB_SCALE), np.rint(inverse[1, 0] * xs * _AB_SCALE)]).astype(np.int64)
    rows = np.stack([np.rint((inverse[0, 1] * ys + inverse[0, 2]) * _AB_SCALE),
                     np.rint((inverse[1, 1] * ys + inverse[1, 2]) * _AB_SCALE)]).astype(np.int64) + half_step
    return rows, cols


def _sampling_grid(
    matrices: Sequence[np.ndarray], height: int, width: int, src_height: int, src_width: int,
    device: torch.device, origin: tuple[int, int], fixed_point: bool,
) -> torch.Tensor:
    """(N, height, width, 2) grid for ``grid_sample`` (align_corners=False) at OpenCV's positions."""
    if fixed_point:
        rows, cols = zip(*(cv_source_positions(m, height, width, origin=origin) for m in matrices))
        rows_t = torch.from_numpy(np.stack(rows)).to(device)  # (N, 2, height)
        cols_t = torch.from_numpy(np.stack(cols)).to(device)  # (N, 2, width)
        fixed = (rows_t[:, :, :, None] + cols_t[:, :, None, :]) >> (10 - _SHIFT)  # (N, 2, h, w), 1/32 px
        positions = fixed.to(torch.float64) / _TAB_SIZE
    else:
        inverse = torch.from_numpy(np.stack([cv2.invertAffineTransform(np.asarray(m, np.float64))
                                             for m in matrices])).to(device)  # (N, 2, 3)
        xs = torch.arange(origin[0], origin[0] + width, dtype=torch.float64, device=device)
        ys = torch.arange(origin[1], origin[1] + height, dtype=torch.float64, device=device)
        positions = (inverse[:, :, 0, None, None] * xs.view(1, 1, 1, -1)
                     + inverse[:, :, 1, None, None] * ys.view(1, 1, -1, 1) + inverse[:, :, 2, None, None])
    sizes = torch.tensor([src_width, src_height], dtype=torch.float64, device=device).view(1, 2, 1, 1)
    normalised = (2.0 * positions + 1.0) / sizes - 1.0
    return normalised.to(torch.float32).permute(0, 2, 3, 1).contiguous()


def warp_affine(
    src: torch.Tensor,
    matrices: Sequence[np.ndarray],
    height: int,
    width: int,
    *,
    border: Sequence[float] | float = 0.0,
    origin: tuple[int, int] = (0, 0),
    fixed_point: bool = False,
) -> torch.Tensor:
    """``cv2.warpAffine(src, M, (width, height), INTER_LINEAR, BORDER_CONSTANT, border)`` for each M.

    ``src`` is (1, C, H, W) (shared by all matrices) or (N, C, H, W) (one per matrix), float.
    ``fixed_point`` takes OpenCV's fixed-point source positions (what it uses for float pictures,
    such as the soft mask); without it the positions are exact, as OpenCV 4.11+ computes them for
    8-bit pictures (the crops and faces). Returns (N, C, height, width) float32, not rounded: round
    it where OpenCV's output was an integer type.
    """
    count = len(matrices)
    src = src.to(torch.float32)
    grid = _sampling_grid(matrices, height, width, src.shape[2], src.shape[3], src.device, origin, fixed_point)
    fill = torch.as_tensor(border, dtype=torch.float32, device=src.device).reshape(1, -1, 1, 1)
    shifted = (src - fill) if src.shape[0] == count else (src - fill).expand(count, -1, -1, -1)
    out = F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill


@lru_cache(maxsize=8)
def _gaussian_kernel(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    kernel = cv2.getGaussianKernel(size, sigma, cv2.CV_64F)[:, 0]
    return torch.from_numpy(kernel.astype(np.float32)).to(device)


def gaussian_blur(x: torch.Tensor, size: int = _BLUR_SIZE, sigma: float = _BLUR_SIGMA) -> torch.Tensor:
    """``cv2.GaussianBlur(x, (size, size), sigma)`` (reflect-101 borders) of (N, 1, H, W) float32, as
    two separable convolutions."""
    kernel = _gaussian_kernel(size, float(sigma), x.device)
    half = size // 2
    x = F.conv2d(F.pad(x, (half, half, 0, 0), mode="reflect"), kernel.view(1, 1, 1, size))
    return F.conv2d(F.pad(x, (0, 0, half, half), mode="reflect"), kernel.view(1, 1, size, 1))


def mask_from_classes(classes: torch.Tensor) -> torch.Tensor:
    """Soft 0-1 masks (N, 1, 512, 512) float32 from (N, 512, 512) ParseNet class maps, on their device.

    As :func:`processor.engine.paste.mask_from_parsing`: face classes 255, blurred twice, rim cleared.
    """
    table = torch.tensor(CLASS_MASK, dtype=torch.float32, device=classes.device)
    mask = table[classes.long()].unsqueeze(1)
    mask = gaussian_blur(gaussian_blur(mask))
    mask[:, :, :_RIM, :] = 0
    mask[:, :, -_RIM:, :] = 0
    mask[:, :, :, :_RIM] = 0
    mask[:, :, :, -_RIM:] = 0
    return mask / 255.0

