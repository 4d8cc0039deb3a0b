"""Runs one micro-batch through the steps its quality levels need, isolating each image's failures.

The steps themselves are pure functions in their own modules; this module only orders them, groups
images by quality level, times each step and turns an image's failure into its own result slot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from photoenhance.contracts.options import Quality
from photoenhance.settings import Settings
from processor.engine.device import resolve_device
from processor.engine.errors import ImageError, ProcessingFailed
from processor.engine.records import EnhanceRequest, EnhanceResult
from processor.engine.resize import lanczos_resize, output_size
from processor.engine.version import ENGINE_VERSION

__all__ = ["Pipeline", "QualityNotLoaded"]

log = logging.getLogger(__name__)


class QualityNotLoaded(ImageError):
    """The request asks for a quality level this engine was not loaded for."""

    code = "quality_not_loaded"


@dataclass
class Pipeline:
    """The loaded models and device, and the order of steps for each quality level."""

    device: torch.device
    qualities: frozenset[Quality]
    models: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, qualities: frozenset[Quality], *, background: str | None = None) -> Pipeline:
        """Resolve the device and load the models ``qualities`` need."""
        device = resolve_device(settings.device)
        return cls(device=device, qualities=qualities)

    def run(self, requests: Sequence[EnhanceRequest]) -> list[EnhanceResult | ImageError]:
        """Enhance a micro-batch; never raises for one image's fault."""
        results: list[EnhanceResult | ImageError | None] = [None] * len(requests)
        for index, request in enumerate(requests):
            quality = request.options.quality
            if quality not in self.qualities:
                loaded = ", ".join(sorted(q.value for q in self.qualities)) or "none"
                results[index] = QualityNotLoaded(
                    f"quality {quality.value!r} is not available on this worker (loaded: {loaded})"
                )
                continue
            if quality is Quality.FAST:
                results[index] = _guard(lambda r=request: self._fast(r))
        return [r if r is not None else ProcessingFailed("the image was not processed") for r in results]

    def release(self) -> None:
        """Drop the models so their memory can be freed."""
        self.models.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _fast(self, request: EnhanceRequest) -> EnhanceResult:
        image, options = request.image, request.options
        started = time.perf_counter()
        size = output_size(image.width, image.height, options.upscale)
        pixels = lanczos_resize(image.pixels, size)
        timings = {"resize": _ms(started)}
        return EnhanceResult(pixels, self._report(request, pixels, timings=timings, faces=[]))

    def _report(
        self, request: EnhanceRequest, pixels: Any, *, timings: dict[str, float], faces: list[dict[str, Any]]
    ) -> dict[str, Any]:
        image = request.image
        return {
            "quality": request.options.quality.value,
            "input": {"width": image.width, "height": image.height, "channels": image.pixels.shape[2],
                      "bit_depth": image.bit_depth},
            "output": {"width": int(pixels.shape[1]), "height": int(pixels.shape[0])},
            "faces_found": len(faces),
            "faces": faces,
            "timings_ms": timings,
            "device": str(self.device),
            "engine_version": ENGINE_VERSION,
        }


def _guard(step: Any) -> EnhanceResult | ImageError:
    """Run one image's work; its failure becomes its result instead of the batch's."""
    try:
        return step()
    except ImageError as exc:
        return exc
    except Exception as exc:  # an unforeseen failure of one image must not cost the others
        log.exception("enhancement failed")
        return ProcessingFailed(f"enhancement failed: {type(exc).__name__}: {exc}")


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
