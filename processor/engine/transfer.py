"""Host <-> device copies of whole pictures: once in, once out.

On CUDA a copy goes through page-locked (pinned) host memory on a side stream, so it can overlap
the networks running on the default stream; the default stream waits for the upload before using
the tensor, and a download waits for the work that produced the tensor. On the CPU both are plain
views (no copy at all).
"""

from __future__ import annotations

import threading

import numpy as np
import torch

__all__ = ["download", "upload"]

_streams: dict[torch.device, torch.cuda.Stream] = {}
_lock = threading.Lock()


def _side_stream(device: torch.device) -> torch.cuda.Stream:
    with _lock:
        if device not in _streams:
            _streams[device] = torch.cuda.Stream(device=device)
        return _streams[device]


def upload(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """An (H, W, C) picture as a tensor on ``device`` (uint8 stays uint8; uint16 becomes int32)."""
    array = pixels.astype(np.int32) if pixels.dtype == np.uint16 else np.ascontiguousarray(pixels)
    host = torch.from_numpy(array)
    if device.type != "cuda":
        return host
    pinned = host.pin_memory()
    stream = _side_stream(device)
    with torch.cuda.stream(stream):
        on_device = pinned.to(device, non_blocking=True)
    torch.cuda.current_stream(device).wait_stream(stream)
    on_device.record_stream(torch.cuda.current_stream(device))
    return on_device


def download(tensor: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """A tensor from any device as a NumPy array of ``dtype`` (the picture's own: uint8 or uint16)."""
    if tensor.device.type != "cuda":
        return np.ascontiguousarray(tensor.contiguous().numpy().astype(dtype, copy=False))
    stream = _side_stream(tensor.device)
    stream.wait_stream(torch.cuda.current_stream(tensor.device))
    pinned = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    with torch.cuda.stream(stream):
        pinned.copy_(tensor, non_blocking=True)
        tensor.record_stream(stream)
    stream.synchronize()
    return pinned.numpy().astype(dtype, copy=False)
