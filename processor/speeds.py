"""How fast this worker is, per quality level: seconds of enhancement per input megapixel.

Kept as an exponentially weighted mean of recent images, so the figure follows the machine (a
busy GPU, a throttled CPU) without one odd image swinging it. Reported with the heartbeat
(:mod:`processor.heartbeat`); the ingest API turns it into estimates.
"""

from __future__ import annotations

__all__ = ["SpeedMeter"]

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
