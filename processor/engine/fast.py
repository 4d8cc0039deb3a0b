"""The ``fast`` level without torch: a Lanczos resize per image, and the pipeline a worker that
serves only ``fast`` runs, so it never imports torch (~0.6 GiB resident it would not use).

:class:`processor.engine.pipeline.Pipeline` uses :func:`fast_result` for its own ``fast`` images,
so both give the same pixels and the same report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from photoenhance.contracts.options import Quality
from processor.engine.errors import ImageError, ProcessingFailed
from processor.engine.records import EnhanceRequest, EnhanceResult
from processor.engine.resize import lanczos_resize, output_size
from processor.engine.version import ENGINE_VERSION

__all__ = ["FastPipeline", "QualityNotLoaded", "as_image_error", "fast_result", "guard", "not_loaded", "report_for"]

log = logging.getLogger(__name__)


class QualityNotLoaded(ImageError):
    """The request asks for a quality level this engine was not loaded for."""

    code = "quality_not_loaded"


def not_loaded(quality: Quality, loaded: frozenset[Quality]) -> QualityNotLoaded:
    """The error for a request at ``quality`` on an engine that loaded ``loaded``."""
    names = ", ".join(sorted(q.value for q in loaded)) or "none"
    return QualityNotLoaded(f"quality {quality.value!r} is not available on this worker (loaded: {names})")


def report_for(request: EnhanceRequest, pixels: Any, *, timings: dict[str, float], device: str,
               faces: Sequence[Any] = ()) -> dict[str, Any]:
    """The per-image report every level returns (the network levels add their own keys)."""
    image = request.image
    return {
        "quality": request.options.quality.value,
        "input": {"width": image.width, "height": image.height, "channels": int(image.pixels.shape[2]),
                  "bit_depth": image.bit_depth},
        "output": {"width": int(pixels.shape[1]), "height": int(pixels.shape[0])},
        "faces_found": len(faces),
        "faces": [face.to_report() for face in faces],
        "timings_ms": timings,
        "device": device,
        "engine_version": ENGINE_VERSION,
    }


def fast_result(request: EnhanceRequest, device: str = "cpu") -> EnhanceResult:
    """The ``fast`` level for one image: Lanczos to the requested size."""
    image = request.image
    started = time.perf_counter()
    pixels = lanczos_resize(image.pixels, output_size(image.width, image.height, request.options.upscale))
    timings = {"resize": round((time.perf_counter() - started) * 1000.0, 3)}
    return EnhanceResult(pixels, report_for(request, pixels, timings=timings, device=device))


def as_image_error(exc: Exception, step: str) -> ImageError:
    """``exc`` as one image's error (unforeseen ones logged with their traceback)."""
    if isinstance(exc, ImageError):
        return exc
    log.error("%s failed: %s", step, exc, exc_info=exc)
    return ProcessingFailed(f"{step} failed: {type(exc).__name__}: {exc}")


def guard(step: Callable[[], EnhanceResult]) -> EnhanceResult | ImageError:
    """Run one image's work; its failure becomes its result instead of the batch's."""
    try:
        return step()
    except Exception as exc:  # noqa: BLE001 - an unforeseen failure of one image must not cost the others
        return as_image_error(exc, "enhancement")


class FastPipeline:
    """What an engine loaded for ``fast`` alone runs: no models, no torch, on the CPU."""

    device = "cpu"
    qualities = frozenset({Quality.FAST})

    def run(self, requests: Sequence[EnhanceRequest]) -> list[EnhanceResult | ImageError]:
        """Enhance a micro-batch; never raises for one image's fault."""
        return [
            guard(lambda r=request: fast_result(r, self.device))
            if request.options.quality is Quality.FAST
            else not_loaded(request.options.quality, self.qualities)
            for request in requests
        ]

    def release(self) -> None:
        """Nothing is loaded."""
