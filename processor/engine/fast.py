"""The ``fast`` level without torch: a Lanczos resize per image, and the pipeline a worker that
serves only ``fast`` runs, so it never imports torch (~0.6 GiB resident it would not use).

:class:`processor.engine.batch_steps.Pipeline` uses :func:`fast_result` for its own ``fast`` images,
so both give the same pixels and the same report.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from photoenhance.contracts.options import Quality
from processor.engine.errors import ImageError, guard, not_loaded
from processor.engine.records import EnhanceRequest, EnhanceResult, report_for
from processor.engine.resize import lanczos_resize, output_size

__all__ = ["FastPipeline", "fast_result"]


def fast_result(request: EnhanceRequest, device: str = "cpu") -> EnhanceResult:
    """The ``fast`` level for one image: Lanczos to the requested size."""
    image = request.image
    started = time.perf_counter()
    pixels = lanczos_resize(image.pixels, output_size(image.width, image.height, request.options.upscale))
    timings = {"resize": round((time.perf_counter() - started) * 1000.0, 3)}
    return EnhanceResult(pixels, report_for(request, pixels, timings=timings, device=device))


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
