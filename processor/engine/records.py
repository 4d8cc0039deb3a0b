"""The engine's input and output records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from photoenhance.contracts.options import EnhanceOptions, Quality
from processor.engine.imageio import DecodedImage
from processor.engine.version import ENGINE_VERSION

__all__ = ["EnhanceRequest", "EnhanceResult", "gains_from_batching", "report_for"]


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


def report_for(request: EnhanceRequest, pixels: np.ndarray, *, timings: dict[str, float], device: str,
               faces: Sequence[Any] = ()) -> dict[str, Any]:
    """The report of :class:`EnhanceResult` that every level gives (the network levels add the
    background model and tile); ``faces`` are the restored faces, each with ``to_report()``."""
    image = request.image
    return {
        "quality": request.options.quality.value,
        "input": {"width": image.width, "height": image.height, "channels": int(image.pixels.shape[2]),
                  "bit_depth": image.bit_depth},
        "output": {"width": int(pixels.shape[1]), "height": int(pixels.shape[0])},
        # What decoding did: format, colour profile (converted, kept, none, or ignored and why),
        # EXIF dropped, how many images the file held.
        "source": {"format": image.source_format, **image.notes},
        "faces_found": len(faces),
        "faces": [face.to_report() for face in faces],
        "timings_ms": timings,
        "device": device,
        "engine_version": ENGINE_VERSION,
    }
