"""How fast this worker is, per quality level: seconds of enhancement per input megapixel.

Kept as an exponentially weighted mean of recent images, so the figure follows the machine (a
busy GPU, a throttled CPU) without one odd image swinging it. Reported with the heartbeat
(:mod:`processor.heartbeat`); the ingest API turns it into estimates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SpeedMeter", "engine_seconds"]

#: Weight of the newest image in the mean.
ALPHA = 0.2
#: Inputs smaller than this count as this many megapixels: tiny images are dominated by
#: fixed per-image costs and would make every estimate absurdly optimistic or pessimistic.
MIN_MEGAPIXELS = 0.01


class SpeedMeter:
    """Seconds per input megapixel, per level."""

    def __init__(self) -> None:
        self._speeds: dict[str, float] = {}

    def observe(self, level: str, seconds: float, pixels: int) -> None:
        """Record one image of ``pixels`` input pixels that took ``seconds`` at ``level``."""
        if seconds < 0 or pixels <= 0:
            return
        value = seconds / max(pixels / 1e6, MIN_MEGAPIXELS)
        old = self._speeds.get(level)
        self._speeds[level] = value if old is None else (1 - ALPHA) * old + ALPHA * value

    def snapshot(self) -> dict[str, float]:
        """The current figures (levels never measured are absent)."""
        return dict(self._speeds)


def engine_seconds(report: Mapping[str, Any], waited_s: float) -> float:
    """The engine's own time for one image: its report's ``timings_ms`` (shared steps of a
    micro-batch already split among its images), else ``waited_s``.

    The time a caller waits for its result also holds the queue before it (other images of the
    prefetch window, the micro-batch window): counting that made a worker's figure after three
    ``balanced`` photos 2.2x what the engine spent on them (bench/estimates.py).
    """
    timings = report.get("timings_ms")
    if isinstance(timings, Mapping) and timings:
        return sum(float(v) for v in timings.values()) / 1000
    return waited_s
