"""Plain resampling: the whole of the ``fast`` level, and the final size step of the others."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["lanczos_resize", "output_size"]


def output_size(width: int, height: int, upscale: float) -> tuple[int, int]:
    """Output ``(width, height)`` for an upscale factor, truncated like the reference pipeline does."""
    return max(1, int(width * upscale)), max(1, int(height * upscale))


def lanczos_resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(h, w, c)`` pixels of any channel count to ``size`` = (width, height) with Lanczos-4.

    Keeps the dtype and the channel axis (OpenCV drops a single channel axis; we put it back).
    """
    if (pixels.shape[1], pixels.shape[0]) == tuple(size):
        return pixels.copy()
    out = cv2.resize(pixels, size, interpolation=cv2.INTER_LANCZOS4)
    return out[:, :, None] if out.ndim == 2 else out
