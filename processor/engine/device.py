"""Which torch device the engine runs on."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(setting: str) -> torch.device:
    """Turn the ``DEVICE`` setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``) into a torch device.

    ``auto`` takes CUDA when present, else the CPU. Asking for CUDA on a machine without it is an
    error rather than a silent fall-back, so a mis-deployed GPU worker says so at start-up.
    """
    choice = setting.strip().lower() or "auto"
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(choice)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"DEVICE={setting!r} but this machine has no usable CUDA device")
    return device
