"""Optional ``torch.compile`` of the fixed-shape networks, warmed up at start-up (ENGINE_COMPILE).

The face networks always see (B, 3, 512, 512), so they compile once per batch size, here, with a
warm-up forward at each size up to the limit (254 s on an H200). The background compiles at the
first picture of each new shape: whole pictures by default (tile 0), so each new picture size
pauses its batch for the compile (60 s on an H200, for 1.55x the eager speed), and after
``torch._dynamo``'s cache limit of shapes it runs eager. Worth it where picture sizes repeat;
hence off by default (docs/BENCHMARKS.md, GPU). ``cudagraphs`` uses torch.compile's
``reduce-overhead`` mode (CUDA graphs: one launch per forward instead of hundreds). The seconds
spent here are the engine's cold start (logged, and reported by ``bench/device_check.sh``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

__all__ = ["COMPILE_MODES", "compile_and_warm_up"]

log = logging.getLogger(__name__)

#: ENGINE_COMPILE value -> torch.compile mode (``off`` compiles nothing).
COMPILE_MODES = {"compile": "default", "cudagraphs": "reduce-overhead"}


def compile_and_warm_up(pipeline: Any, setting: str) -> float:
    """Compile the pipeline's restorer, parser and background network; returns the seconds it took."""
    choice = setting.strip().lower()
    if choice not in COMPILE_MODES:
        raise ValueError(f"ENGINE_COMPILE must be off, {' or '.join(COMPILE_MODES)}, got {setting!r}")
    mode = COMPILE_MODES[choice]
    started = time.perf_counter()
    models, device = pipeline.models, pipeline.device
    if models.restorer is not None:
        models.restorer = torch.compile(models.restorer, mode=mode, dynamic=False)
        models.parser = torch.compile(models.parser, mode=mode, dynamic=False)
        batch = 1
        while batch <= pipeline.limits.max_faces_per_forward:
            faces = torch.zeros(batch, 3, 512, 512, device=device)
            with torch.no_grad():
                models.restorer(faces, return_rgb=False, randomize_noise=False)
                models.parser(faces)
            batch *= 2
    if models.background is not None:
        net = models.background
        object.__setattr__(net, "module", torch.compile(net.module, mode=mode, dynamic=False))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    log.info("networks compiled (%s) and warmed up in %.1f s", choice, seconds)
    return seconds
