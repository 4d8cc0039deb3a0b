"""The engine's input and output records."""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any

import numpy as np

from photoenhance.contracts.options import EnhanceOptions, Quality
from processor.engine.imageio import DecodedImage

__all__ = ["EnhanceRequest", "EnhanceResult", "gains_from_batching"]


@dataclass(frozen=True)
class EnhanceRequest:
    """One decoded image and what to do with it."""

    image: DecodedImage
    options: EnhanceOptions = field(default_factory=EnhanceOptions)
    #: Five-point landmarks ((5, 2) arrays, input pixels) of faces the caller already knows; when
    #: given, detection is skipped for this image. Tests and benchmarks use it with random weights.
    faces: Sequence[np.ndarray] | None = None


def gains_from_batching(request: EnhanceRequest) -> bool:
    """Whether ``request`` runs faster beside others in one micro-batch: the network levels batch
    faces and background tiles across images; ``fast`` is a Lanczos resize per image, so waiting
    for company would only add the window to its latency."""
    return request.options.quality is not Quality.FAST


@dataclass(frozen=True)
class EnhanceResult:
    """The enhanced pixels (same layout and dtype as the input) and a JSON-ready report.

    The report holds: ``quality``, ``input`` and ``output`` sizes, ``faces_found``, ``faces`` (box,
    eye distance and size of each restored face), ``timings_ms`` per step, ``device`` and
    ``engine_version``.
    """

    pixels: np.ndarray
    report: dict[str, Any]
