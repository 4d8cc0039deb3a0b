"""A worker's speed figures: seconds of the engine's own work per input megapixel."""

from __future__ import annotations

import pytest

from processor.speeds import ALPHA, SpeedMeter, engine_seconds


def test_the_engines_own_time_counts_not_the_wait_before_it() -> None:
    # A third image of a prefetch window waited for two others: 9 s waited, 3 s of its own work.
    assert engine_seconds({"timings_ms": {"detect": 500.0, "background": 2500.0}}, 9.0) == pytest.approx(3.0)
    assert engine_seconds({}, 9.0) == 9.0  # a report without timings: the wait is all there is
    assert engine_seconds({"timings_ms": {}}, 1.5) == 1.5


def test_the_figure_is_a_moving_mean_per_level_with_a_floor_on_tiny_images() -> None:
    meter = SpeedMeter()
    meter.observe("balanced", 2.0, 1_000_000)
    meter.observe("balanced", 4.0, 1_000_000)
    meter.observe("fast", 0.001, 100)  # 100 pixels count as 0.01 megapixels
    assert meter.snapshot() == pytest.approx({"balanced": (1 - ALPHA) * 2.0 + ALPHA * 4.0, "fast": 0.1})
    meter.observe("best", -1.0, 10)  # nonsense is ignored
    assert "best" not in meter.snapshot()
