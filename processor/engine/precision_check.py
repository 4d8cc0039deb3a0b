"""``photoenhance weights check --precision``: each network at each reduced precision against fp32.

Runs with whatever weights are installed, on pictures made here (smooth random noise: the point is
the arithmetic, not the content), on the engine's device. Differences are in the units an operator
judges: levels of 8 bits for GFPGAN and Real-ESRGAN, the detector's face probability, and for
ParseNet the share of pixels whose class changes (the mask follows the classes). A precision the
device cannot run (fp16 convolutions on some CPUs), or cannot run at a usable speed (bf16 and fp16
on a CPU without AVX-512 or AMX), is reported as unsupported, not as a crash or an hour's wait.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import torch

from processor.engine.models import Models
from processor.engine.precision import autocast, precision_dtype

__all__ = ["compare_precisions", "cpu_cannot_run", "format_rows"]


def _picture(size: int, seed: int) -> torch.Tensor:
    """(1, 3, size, size) float32 in [0, 1]: blurred noise."""
    noise = np.random.default_rng(seed).random((size, size, 3)).astype(np.float32)
    return torch.from_numpy(cv2.GaussianBlur(noise, (7, 7), 2)).permute(2, 0, 1).unsqueeze(0)


def _runners(models: Models, device: torch.device, size: int) -> dict[str, Callable[[str], torch.Tensor]]:
    """Per network: a function of the precision returning its output in judging units."""
    runners: dict[str, Callable[[str], torch.Tensor]] = {}
    face = (_picture(512, 1).to(device) - 0.5) / 0.5
    if models.detector is not None:
        canvas = _picture(size, 2).to(device) * 255.0 - torch.tensor([104.0, 117.0, 123.0], device=device).view(1, 3, 1, 1)

        def detector(choice: str) -> torch.Tensor:
            with torch.no_grad(), autocast(choice, device):
                _, conf, _ = models.detector(canvas)
            return conf.float()[..., 1]  # face probability of every anchor
        runners["detector"] = detector
    if models.restorer is not None:
        def restorer(choice: str) -> torch.Tensor:
            with torch.no_grad(), autocast(choice, device):
                output, _ = models.restorer(face, return_rgb=False, randomize_noise=False)
            return (output.float().clamp(-1, 1) + 1) * 127.5
        runners["restorer"] = restorer
    if models.parser is not None:
        def parser(choice: str) -> torch.Tensor:
            with torch.no_grad(), autocast(choice, device):
                logits = models.parser(face)[0]
            return logits.float().argmax(dim=1)
        runners["parser"] = parser
    if models.background is not None:
        net = models.background
        reference = copy.deepcopy(net.module).to(torch.float32)
        plane = _picture(size - size % max(net.multiple, 1), 3).to(device)

        def background(choice: str) -> torch.Tensor:
            module = reference if choice in ("fp32", "tf32") else copy.deepcopy(reference).to(precision_dtype(choice))
            with torch.no_grad():
                out = module(plane.to(precision_dtype(choice)).contiguous(memory_format=torch.channels_last))
            return out.float().clamp(0, 1) * 255.0
        runners["background"] = background
    return runners


#: Whether this CPU runs a reduced precision natively, per precision (oneDNN's own probes).
NATIVE_ON_CPU: dict[str, Callable[[], bool]] = {
    "bf16": lambda: torch.ops.mkldnn._is_mkldnn_bf16_supported(),
    "fp16": lambda: torch.ops.mkldnn._is_mkldnn_fp16_supported(),
}


def cpu_cannot_run(choice: str, device: torch.device) -> str | None:
    """Why the CPU ``device`` cannot run ``choice`` at a usable speed, or None.

    oneDNN runs bf16 and fp16 natively only with AVX-512 (or AMX) on x86; without them torch
    emulates them, and one 512-pixel GFPGAN pass took over ten minutes on a 2-core AVX2 machine.
    """
    probe = NATIVE_ON_CPU.get(choice)
    if device.type != "cpu" or probe is None:
        return None
    try:
        native = bool(probe())
    except (AttributeError, RuntimeError):  # a torch without the probe: let the run say
        return None
    if native:
        return None
    return f"this CPU has no native {choice} (oneDNN needs AVX-512 or AMX); emulated, one network takes minutes"


def compare_precisions(models: Models, device: torch.device, *, precisions: Sequence[str] = ("bf16", "fp16"),
                       size: int = 128) -> list[dict[str, Any]]:
    """One row per (network, precision): max and mean difference from fp32, or why it could not run."""
    rows: list[dict[str, Any]] = []
    for network, run in _runners(models, device, size).items():
        baseline = run("fp32")
        for choice in precisions:
            row: dict[str, Any] = {"network": network, "precision": choice}
            why_not = cpu_cannot_run(choice, device)
            if why_not is not None:
                row["unsupported"] = why_not
                rows.append(row)
                continue
            try:
                output = run(choice)
            except (RuntimeError, NotImplementedError, TypeError) as exc:
                row["unsupported"] = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
                rows.append(row)
                continue
            if network == "parser":
                changed = (output != baseline).float().mean().item()
                row.update(unit="share of pixels whose class changed", max=changed, mean=changed)
            else:
                diff = (output - baseline).abs()
                row.update(unit="probability" if network == "detector" else "levels of 8 bits",
                           max=diff.max().item(), mean=diff.mean().item())
            row["finite"] = bool(torch.isfinite(output.float()).all().item())
            rows.append(row)
    return rows


def format_rows(rows: Sequence[dict[str, Any]], device: torch.device) -> str:
    """A plain table of :func:`compare_precisions`' rows."""
    lines = [f"precision vs fp32 on {device}",
             f"{'network':<11} {'precision':<9} {'max':>10} {'mean':>10}  unit"]
    for row in rows:
        if "unsupported" in row:
            lines.append(
                f"{row['network']:<11} {row['precision']:<9} {'-':>10} {'-':>10}  unsupported here: {row['unsupported']}"
            )
        else:
            flag = "" if row["finite"] else "  (NaN/inf in the output)"
            lines.append(
                f"{row['network']:<11} {row['precision']:<9} {row['max']:>10.4f} {row['mean']:>10.4f}  {row['unit']}{flag}"
            )
    return "\n".join(lines)
