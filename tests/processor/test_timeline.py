"""The per-image timeline (processor/timeline.py): marks in the completed image's report and event.

Only the order of the marks is checked, never how far apart they are: speed is measured in bench/.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from db.repository import Repository
from harness.processor import (
    ProgressRecorder,
    batch_completed,
    eventually,
    image_bytes,
    put_async,
    running_worker,
)
from photoenhance.contracts.keys import MANIFEST_NAME
from photoenhance.contracts.progress import EventType
from photoenhance.settings import Settings
from processor.handler import attempt_of
from processor.publisher import ATTEMPT_HEADER, DEFERRAL_HEADER
from processor.timeline import MARKS, Timeline


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_timeline_starts_at_the_delivery_and_keeps_marks_as_utc_iso_text() -> None:
    delivered = datetime(2030, 1, 2, 3, 4, 5, 600, tzinfo=timezone(timedelta(hours=2)))
    timeline = Timeline(delivered)
    timeline.mark("claimed")
    report = timeline.as_report()
    assert list(report) == ["received", "claimed"]
    assert report["received"] == "2030-01-02T01:04:05.000600Z"
    assert report["claimed"].endswith("Z") and _parse(report["claimed"]).tzinfo is not None
    report["claimed"] = "changed"
    assert timeline.as_report()["claimed"] != "changed", "the report is a copy"


def test_timeline_without_a_delivery_time_starts_now() -> None:
    before = datetime.now(UTC)
    received = _parse(Timeline().as_report()["received"])
    assert before <= received <= datetime.now(UTC)


def test_attempt_carries_the_delivery_time_beside_the_retry_counters() -> None:
    delivered = datetime.now(UTC)
    message = SimpleNamespace(headers={ATTEMPT_HEADER: 2, DEFERRAL_HEADER: 1})
    attempt = attempt_of(message, delivered)  # type: ignore[arg-type]
    assert (attempt.failures, attempt.deferrals, attempt.received_at) == (2, 1, delivered)
    assert attempt_of(SimpleNamespace(headers=None)).received_at is None  # type: ignore[arg-type]


@pytest.mark.objectstore
async def test_completed_images_report_every_mark_in_order_and_publish_it(
    processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    batch_id = "timeline3"
    manifest = json.dumps({"expected_count": 3, "options": {"quality": "fast"}}).encode()
    async with ProgressRecorder(processor_settings) as progress, running_worker(processor_settings, fast_engine):
        await put_async(processor_settings, f"{batch_id}/{MANIFEST_NAME}", manifest)
        for i in range(3):
            await put_async(processor_settings, f"{batch_id}/p{i}.jpg", image_bytes(64, 48, seed=i))
        await batch_completed(repository, batch_id)
        await eventually(lambda: _published(progress, batch_id, 3), what="their events")

    snapshot = await repository.batch_snapshot(batch_id)
    events = {e.image.name: e for e in progress.distinct(batch_id).values() if e.type is EventType.IMAGE_COMPLETED}
    for image in snapshot.images:
        timeline = image.report["timeline"]
        assert list(timeline) == list(MARKS)
        moments = [_parse(timeline[m]) for m in MARKS]
        assert moments == sorted(moments), f"{image.name}: marks out of order: {timeline}"
        event = events[image.name]
        assert event.image.report["timeline"] == timeline, "the event carries the stored timeline"
        assert event.time >= moments[-1], "the commit (event time) follows the stored result"


async def _published(progress: ProgressRecorder, batch_id: str, n: int) -> bool:
    return sum(e.type is EventType.IMAGE_COMPLETED for e in progress.distinct(batch_id).values()) >= n
