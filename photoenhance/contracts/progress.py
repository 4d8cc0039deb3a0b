"""Progress events: what the processor records and publishes, and the notifier pushes to people.

Each event carries its batch's sequence number, assigned in the database in the same transaction
as the state change it reports, so a subscriber that remembers the last number it saw can ask for
exactly the events it missed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

__all__ = [
    "BatchCounts",
    "EventType",
    "ImageProgress",
    "ProgressEvent",
    "ProgressEventError",
    "progress_routing_key",
]


class ProgressEventError(ValueError):
    """A progress event body that cannot be read."""


class EventType(str, Enum):
    """What happened."""

    #: An image's result is stored and recorded.
    IMAGE_COMPLETED = "image.completed"
    #: An image failed for good; ``image.reason`` says why.
    IMAGE_FAILED = "image.failed"
    #: Every image of the batch is final.
    BATCH_COMPLETED = "batch.completed"
    #: The batch was cancelled and its last in-flight image is final: nothing more will happen.
    BATCH_CANCELLED = "batch.cancelled"


@dataclass(frozen=True)
class BatchCounts:
    """A batch's counters as of one event."""

    #: Images registered (each key counts once, whatever its versions).
    total: int = 0
    completed: int = 0
    failed: int = 0
    #: Images the batch was created with, when known.
    expected: int | None = None
    #: Images left unprocessed because the batch was cancelled before a worker claimed them.
    cancelled: int = 0

    @property
    def final(self) -> int:
        """Images in a final state."""
        return self.completed + self.failed + self.cancelled


@dataclass(frozen=True)
class ImageProgress:
    """The image an event is about."""

    #: The name inside the batch (the key without the batch prefix).
    name: str
    state: str
    output_key: str | None = None
    #: Why it failed, in plain words.
    reason: str | None = None
    #: A stable machine-readable failure code (``not_an_image``, ``too_many_pixels``, ...).
    code: str | None = None
    #: Engine facts: faces found, sizes, time per step.
    report: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProgressEvent:
    """One entry of a batch's event log."""

    batch_id: str
    seq: int
    type: EventType
    time: datetime
    counts: BatchCounts
    image: ImageProgress | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "batch_id": self.batch_id,
            "seq": self.seq,
            "type": self.type.value,
            "time": self.time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "counts": asdict(self.counts),
            "image": None if self.image is None else asdict(self.image),
        }

    def to_json(self) -> bytes:
        """The wire form (UTF-8 JSON)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_dict(cls, doc: Any) -> ProgressEvent:
        """Read the form :meth:`to_dict` writes."""
        try:
            image = doc.get("image")
            when = datetime.fromisoformat(str(doc["time"]).replace("Z", "+00:00"))
            return cls(
                batch_id=str(doc["batch_id"]),
                seq=int(doc["seq"]),
                type=EventType(doc["type"]),
                time=when,
                counts=BatchCounts(**doc["counts"]),
                image=None if image is None else ImageProgress(**image),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ProgressEventError(f"not a progress event: {exc}") from exc

    @classmethod
    def from_json(cls, body: bytes | str) -> ProgressEvent:
        """Read the form :meth:`to_json` writes, or raise :class:`ProgressEventError`."""
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProgressEventError(f"progress event is not JSON: {exc}") from exc
        return cls.from_dict(doc)


def progress_routing_key(batch_id: str) -> str:
    """Routing key of a batch's events on the progress exchange."""
    return f"batch.{batch_id}"
