"""Which networks may run in reduced precision, and where.

Only on CUDA, and only where the output stays within tolerance. Real-ESRGAN in float16 is the
upstream default on GPUs; GFPGAN in float16 is reported to break (NaN or visibly wrong faces), and
the detector's scores decide which faces exist at all, so both stay in float32. On a GPU,
``bench/engine.py`` reports every network's float16-vs-float32 difference
(``fp16_vs_fp32_max_levels``) to check this table.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

__all__ = [
    "HALF_ON_CUDA",
    "PRECISIONS",
    "ROLES",
    "allow_tf32",
    "autocast",
    "default_precision",
    "dtype_for",
    "precision_dtype",
    "resolve_precision",
]

#: Network role -> whether it runs in float16 on CUDA.
HALF_ON_CUDA: dict[str, bool] = {
    "background": True,
    "restorer": False,
    "detector": False,
    "parser": False,
}


def dtype_for(role: str, device: torch.device) -> torch.dtype:
    """The dtype a network of ``role`` runs in on ``device`` (always float32 on the CPU)."""
    if device.type == "cuda" and HALF_ON_CUDA.get(role, False):
        return torch.float16
    return torch.float32


# -- per-network precision settings (the device path) ----------------------------------------------

#: The precisions a network may be set to; ``auto`` takes :func:`default_precision`.
PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp16")
#: Network roles, in the order the engine runs them.
ROLES = ("detector", "restorer", "parser", "background")
_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def default_precision(role: str, device: torch.device) -> str:
    """The precision a network of ``role`` gets when its setting is ``auto``.

    CUDA: background fp16 (Real-ESRGAN's upstream default), the others fp32 with TF32 matmuls and
    convolutions (GFPGAN in fp16 is reported to break; the detector's scores decide which faces exist).
    CPU: fp32 everywhere (bf16 is a choice to prove with ``photoenhance weights check --precision``).
    """
    if device.type != "cuda":
        return "fp32"
    return "fp16" if HALF_ON_CUDA.get(role, False) else "tf32"


def resolve_precision(role: str, setting: str, device: torch.device) -> str:
    """A network's precision from its setting: ``auto`` → the default; ``tf32`` on the CPU → ``fp32``."""
    choice = (setting or "auto").strip().lower()
    if choice not in PRECISIONS:
        raise ValueError(f"precision of {role} must be one of {', '.join(PRECISIONS)}, got {setting!r}")
    if choice == "auto":
        choice = default_precision(role, device)
    if choice == "tf32" and device.type != "cuda":
        choice = "fp32"
    return choice


def precision_dtype(choice: str) -> torch.dtype:
    """The tensor dtype a precision computes in (``tf32`` keeps float32 tensors)."""
    return _DTYPES[choice]


def autocast(choice: str, device: torch.device) -> Any:
    """A context that runs a float32 network at ``choice``: autocast for bf16/fp16, nothing otherwise.

    TF32 is a process-wide switch (:func:`allow_tf32`), not a per-call context.
    """
    if choice in ("bf16", "fp16"):
        return torch.autocast(device_type=device.type, dtype=_DTYPES[choice])
    return contextlib.nullcontext()


def allow_tf32(enabled: bool) -> None:
    """Let CUDA matmuls and cuDNN convolutions use TF32 (10-bit mantissa inputs, fp32 accumulation)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
