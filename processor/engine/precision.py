"""Which networks may run in reduced precision, and where.

Only on CUDA, and only where the output stays within tolerance. Real-ESRGAN in float16 is the
upstream default on GPUs; GFPGAN in float16 is reported to break (NaN or visibly wrong faces), and
the detector's scores decide which faces exist at all, so both stay in float32. On a GPU,
``bench/engine.py`` reports every network's float16-vs-float32 difference
(``fp16_vs_fp32_max_levels``) to check this table.
"""

from __future__ import annotations

import torch

__all__ = ["HALF_ON_CUDA", "dtype_for"]

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
