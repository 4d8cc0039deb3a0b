"""From per-image moments to stage latencies, throughput and client comparisons (pure functions).

Every image has moments (seconds since the epoch, one machine's clock) from four sources:

- the client: ``put_started``, ``put_done`` (the upload's answer arrived);
- the taps (bench/taps.py): ``notified`` (the bucket notification reached the broker),
  ``published`` (the progress event reached the broker);
- the worker's timeline (processor/timeline.py): ``received`` ... ``stored``, and the event's
  ``time``, stamped inside the committing transaction: ``committed``;
- the subscribers: ``ws`` (the WebSocket event arrived), ``polled`` (a status answer first
  showed it completed).

A stage is the time between two moments; the five main ones (:data:`STAGES`) add up to
``total``, upload answered → WebSocket event.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

from processor.timeline import MARKS

__all__ = [
    "DETAIL_STAGES",
    "STAGES",
    "client_view",
    "over_time",
    "stage_durations",
    "summarize",
]

#: (name, from moment, to moment): the stages an image's latency is split into, in order.
STAGES: tuple[tuple[str, str, str], ...] = (
    ("notification", "put_done", "notified"),
    ("queue_wait", "notified", "received"),
    ("processing", "received", "stored"),
    ("commit", "stored", "committed"),
    ("push", "committed", "ws"),
)

#: The step that ends at each timeline mark (processor/timeline.py says what each mark means).
_STEP_ENDING_AT = {
    "claimed": "claim", "fetched": "fetch", "reserved": "reserve", "decoded": "decode",
    "enhanced": "enhance", "encoded": "encode", "stored": "store",
}

#: Finer stages inside ``processing`` (between consecutive timeline marks) and inside ``push``.
DETAIL_STAGES: tuple[tuple[str, str, str], ...] = (
    *((f"processing.{_STEP_ENDING_AT[b]}", a, b) for a, b in zip(MARKS, MARKS[1:])),
    ("push.publish", "committed", "published"),
    ("push.deliver", "published", "ws"),
)

#: Upload answered → the WebSocket event arrived.
TOTAL = ("total", "put_done", "ws")


def stage_durations(
    moments: dict[str, dict[str, float]], stages: Iterable[tuple[str, str, str]]
) -> dict[str, list[float]]:
    """Seconds each stage took, per stage, over the images that have both of its moments."""
    found: dict[str, list[float]] = {}
    for name, start, end in stages:
        found[name] = [m[end] - m[start] for m in moments.values() if start in m and end in m]
    return found


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile ``p`` (0-100) of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = p / 100 * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values_s: Sequence[float]) -> dict[str, float | int] | None:
    """Count, mean, min, p50, p95, p99 and max in milliseconds; None for no values."""
    if not values_s:
        return None
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "mean_ms": round(statistics.fmean(ms), 1),
        "min_ms": round(min(ms), 1),
        "p50_ms": round(percentile(ms, 50), 1),
        "p95_ms": round(percentile(ms, 95), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "max_ms": round(max(ms), 1),
    }


def over_time(moments: Iterable[float], origin: float, bin_s: float) -> list[list[float]]:
    """``[[bin start s, events per s], ...]`` from ``origin``, every bin up to the last event."""
    offsets = [t - origin for t in moments]
    if not offsets:
        return []
    counts = [0] * (int(max(offsets) // bin_s) + 1)
    for offset in offsets:
        counts[max(0, int(offset // bin_s))] += 1
    return [[round(i * bin_s, 3), round(c / bin_s, 2)] for i, c in enumerate(counts)]


def client_view(moments: dict[str, dict[str, float]], learned: str, origin: float) -> dict[str, object] | None:
    """How a client learning of results at moment ``learned`` fared.

    ``first_result_s``: from ``origin`` (the first upload sent) until it learned of its first
    result; ``delay``: commit → it learned, per image; ``learned``: how many images it learned of.
    """
    times = [m[learned] for m in moments.values() if learned in m]
    if not times:
        return None
    delays = [m[learned] - m["committed"] for m in moments.values() if learned in m and "committed" in m]
    return {
        "learned": len(times),
        "first_result_s": round(min(times) - origin, 3),
        "all_results_s": round(max(times) - origin, 3),
        "delay": summarize(delays),
    }
