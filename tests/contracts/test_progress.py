"""Progress events survive the wire unchanged, and bad bodies raise the named error."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from photoenhance.contracts.progress import (
    BatchCounts,
    EventType,
    ImageProgress,
    ProgressEvent,
    ProgressEventError,
    progress_routing_key,
)


def test_round_trip() -> None:
    event = ProgressEvent(
        batch_id="b1",
        seq=7,
        type=EventType.IMAGE_FAILED,
        time=datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC),
        counts=BatchCounts(total=3, completed=1, failed=1, expected=3),
        image=ImageProgress(name="ü <b>.jpg", state="failed", reason="not an image", code="not_an_image"),
    )
    wire = event.to_json()
    assert b'"time":"2026-11-28T12:00:00.123456Z"' in wire
    assert ProgressEvent.from_json(wire) == event
    batch_done = ProgressEvent("b1", 8, EventType.BATCH_COMPLETED, event.time, BatchCounts(3, 2, 1))
    assert ProgressEvent.from_json(batch_done.to_json()) == batch_done
    assert batch_done.counts.final == 3


@pytest.mark.parametrize("wire", [b"nope", b"[]", b'{"seq": 1}', b'{"batch_id":"b","seq":"x","type":"image.completed",'
                                  b'"time":"2026-01-01T00:00:00Z","counts":{}}', b'{"batch_id":"b","seq":1,"type":"boom",'
                                  b'"time":"2026-01-01T00:00:00Z","counts":{}}'])
def test_bad_bodies_raise_the_named_error(wire: bytes) -> None:
    with pytest.raises(ProgressEventError):
        ProgressEvent.from_json(wire)


def test_routing_key() -> None:
    assert progress_routing_key("01HZ.x") == "batch.01HZ.x"
