"""Pure bookkeeping of ``bench/engine.py``'s micro-batch sweep: options, face layout, per-size summaries."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["face_layout", "parse_batch_sizes", "speedups", "summarize"]

#: Five landmarks of one face in a 128-pixel cell (eyes 28 px apart), as the engine tests place them.
_FACE_IN_CELL = np.array([[50, 55], [78, 55], [64, 70], [53, 85], [75, 85]], np.float32)


def parse_batch_sizes(text: str) -> list[int]:
    """``"1,2,4,8"`` -> [1, 2, 4, 8]: positive, distinct, in ascending order."""
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as exc:
        raise ValueError(f"batch sizes must be whole numbers separated by commas, got {text!r}") from exc
    if not sizes or sizes[0] < 1:
        raise ValueError(f"batch sizes must be at least 1, got {text!r}")
    return sizes


def face_layout(size: int, faces: int) -> list[np.ndarray]:
    """Landmarks of ``faces`` faces in a ``size``-pixel square picture, one per cell of a near-square grid."""
    if faces < 1:
        return []
    cols = math.ceil(math.sqrt(faces))
    rows = math.ceil(faces / cols)
    cell_w, cell_h = size / cols, size / rows
    scale = min(cell_w, cell_h) / 128.0
    layout = []
    for index in range(faces):
        row, col = divmod(index, cols)
        offset = np.array([col * cell_w + (cell_w - 128 * scale) / 2, row * cell_h + (cell_h - 128 * scale) / 2])
        layout.append((_FACE_IN_CELL * scale + offset).astype(np.float32))
    return layout


def summarize(batch: int, seconds: Sequence[float], reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One sweep entry: throughput and mean per-image step times over all calls at micro-batch ``batch``.

    ``seconds`` holds each call's wall time, ``reports`` every image's engine report (its
    ``timings_ms`` split shared steps among the images of a call by their share of the work).
    """
    images = len(reports)
    faces = sum(int(report.get("faces_found", 0)) for report in reports)
    total = float(sum(seconds))
    steps: dict[str, float] = {}
    for report in reports:
        for step, ms in report["timings_ms"].items():
            steps[step] = steps.get(step, 0.0) + float(ms)
    return {
        "batch": batch,
        "calls": len(seconds),
        "images": images,
        "faces": faces,
        "seconds": round(total, 3),
        "images_per_s": round(images / total, 4),
        "faces_per_s": round(faces / total, 4),
        "s_per_image": round(total / images, 4),
        "step_ms_per_image": {step: round(ms / images, 2) for step, ms in steps.items()},
    }


def speedups(entries: Sequence[dict[str, Any]]) -> None:
    """Add to each entry its speed-up over the smallest micro-batch (B=1 when swept), overall and per step.

    A speed-up is the smallest batch's time per image over this entry's: above 1 is faster. The
    entry gets ``speedup`` ({"per_image": ..., step: ...}) and ``speedup_base_batch``.
    """
    if not entries:
        return
    base = min(entries, key=lambda entry: entry["batch"])
    for entry in entries:
        ups = {"per_image": round(base["s_per_image"] / entry["s_per_image"], 3)}
        for step, ms in entry["step_ms_per_image"].items():
            reference = base["step_ms_per_image"].get(step)
            if reference is not None and ms > 0:
                ups[step] = round(reference / ms, 3)
        entry["speedup"] = ups
        entry["speedup_base_batch"] = base["batch"]
