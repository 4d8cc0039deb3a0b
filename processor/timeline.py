"""Wall-clock marks of one image's way through a worker, kept in its report as ``timeline``.

The completed image's report (stored with the row and sent in its ``image.completed`` event) gets
``"timeline": {mark: UTC ISO-8601 time with microseconds}``. Benchmarks (``bench/pipeline.py``)
line these marks up with the client's and the broker's own times to split an image's latency
into stages; ``/metrics`` has the per-step durations, this has the moments, per image.

Marks, in the order they are taken (:data:`MARKS`):

- ``received``: the worker's handler started on the delivery (the message left the queue);
- ``claimed``: the version registered and claimed, its result key reserved (one database write
  under the batch lock, shared with the starts that arrived with it);
- ``fetched``: the source object is read from the store;
- ``reserved``: the result key is settled (reserved with the claim, or again here, a database
  write, when the object's own metadata changed the result's format);
- ``decoded``: the source is decoded;
- ``enhanced``: the engine returned (includes waiting for the micro-batch window to close);
- ``encoded``: the result is encoded;
- ``stored``: the result object is written; recording it (the commit) starts right after.

There is no ``committed`` mark: the report is written by the committing transaction itself. The
event's ``time``, stamped inside that transaction once it holds the batch lock, stands for it.
Times come from the system clock, so they compare across processes of one machine only.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["MARKS", "Timeline", "utc_now"]

#: Every mark a completed image's timeline holds, in the order they are taken.
MARKS = ("received", "claimed", "fetched", "reserved", "decoded", "enhanced", "encoded", "stored")


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Timeline:
    """Marks taken while one image is processed; starts with ``received`` (now, unless given)."""

    def __init__(self, received_at: datetime | None = None) -> None:
        self._marks: dict[str, str] = {"received": _iso(received_at or utc_now())}

    def mark(self, name: str) -> None:
        """Record that ``name`` (one of :data:`MARKS`) happened now."""
        self._marks[name] = _iso(utc_now())

    def as_report(self) -> dict[str, str]:
        """The marks so far, for the image's report."""
        return dict(self._marks)
