"""A batch uploaded by a plain S3 client, through the real store's notifications, RabbitMQ and a worker.

Against SQLite and PostgreSQL: every image yields one result object and one completed row, the
progress events carry sequence numbers 1..N without gaps, and duplicates change nothing.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from db.repository import Repository
from harness.processor import (
    ProgressRecorder,
    batch_completed,
    eventually,
    image_bytes,
    output_keys,
    put_async,
    running_worker,
)
from photoenhance.contracts.events import notification_body
from photoenhance.contracts.keys import MANIFEST_NAME
from photoenhance.contracts.progress import EventType
from photoenhance.contracts.states import ImageState
from photoenhance.s3 import minio_client
from photoenhance.settings import Settings
from processor.engine import ENGINE_VERSION

pytestmark = [pytest.mark.objectstore, pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)]

COUNT = 30


async def upload_batch(settings: Settings, batch_id: str, count: int) -> dict[str, str]:
    """A manifest (expected count, fast options), then ``count`` images; returns name -> etag."""
    manifest = json.dumps({"expected_count": count, "options": {"quality": "fast", "upscale": 2}}).encode()
    await put_async(settings, f"{batch_id}/{MANIFEST_NAME}", manifest)
    etags = {}
    for i in range(count):
        name = f"photo {i:02d}.jpg"
        etags[name] = await put_async(settings, f"{batch_id}/{name}", image_bytes(64 + i, 48, seed=i))
    return etags


async def test_thirty_uploads_give_thirty_results_and_gapless_progress(
    processor_settings: Settings, repository: Repository, fast_engine, record_property
) -> None:
    batch_id = "flow30"
    async with ProgressRecorder(processor_settings) as progress, running_worker(processor_settings, fast_engine) as worker:
        started = asyncio.get_running_loop().time()
        etags = await upload_batch(processor_settings, batch_id, COUNT)
        batch = await batch_completed(repository, batch_id)
        elapsed = asyncio.get_running_loop().time() - started
        await eventually(lambda: _has(progress, batch_id, COUNT + 1), what="all progress events")

    record_property("batch_seconds", round(elapsed, 2))
    assert (batch.total, batch.completed, batch.failed, batch.expected_count) == (COUNT, COUNT, 0, COUNT)
    results = output_keys(processor_settings, f"{batch_id}/")
    assert results == sorted(f"{batch_id}/photo {i:02d}.jpg" for i in range(COUNT))

    snapshot = await repository.batch_snapshot(batch_id)
    assert [i.state for i in snapshot.images] == [ImageState.COMPLETED] * COUNT
    assert {i.name: i.etag for i in snapshot.images} == etags

    events = await repository.events_since(batch_id)
    assert [e.seq for e in events] == list(range(1, COUNT + 2))
    assert [e.type for e in events].count(EventType.IMAGE_COMPLETED) == COUNT
    assert events[-1].type is EventType.BATCH_COMPLETED
    published = progress.distinct(batch_id)
    assert sorted(published) == list(range(1, COUNT + 2)), "published sequence numbers 1..N, no gap"
    assert {s: e.to_dict() for s, e in published.items()} == {e.seq: e.to_dict() for e in events}

    # the result carries where it came from
    client = minio_client(processor_settings)
    stat = client.stat_object(processor_settings.s3_output_bucket, f"{batch_id}/photo 07.jpg")
    meta = {k.lower(): v for k, v in stat.metadata.items()}
    assert meta["x-amz-meta-photoenhance-source-etag"] == etags["photo 07.jpg"]
    assert meta["x-amz-meta-photoenhance-engine-version"] == ENGINE_VERSION
    assert json.loads(meta["x-amz-meta-photoenhance-options"])["quality"] == "fast"
    assert worker.metrics.processed._value.get() == COUNT


async def _has(progress: ProgressRecorder, batch_id: str, n: int) -> bool:
    return len(progress.distinct(batch_id)) >= n


async def test_duplicate_notifications_and_identical_reuploads_change_nothing(
    processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    batch_id = "dups30"
    async with ProgressRecorder(processor_settings) as progress, running_worker(processor_settings, fast_engine) as worker:
        etags = await upload_batch(processor_settings, batch_id, COUNT)
        await batch_completed(repository, batch_id)
        before = await repository.events_since(batch_id)
        # every notification twice more, straight onto the events exchange ...
        for name, etag in etags.items():
            body = notification_body(processor_settings.s3_input_bucket, f"{batch_id}/{name}", etag, 10,
                                     before[0].time, source="test:duplicate")
            await worker.pipeline.publisher.announce(body)
            await worker.pipeline.publisher.announce(body)
        # ... and every image uploaded again with the same bytes (same etag: the store announces it again)
        for i, name in enumerate(sorted(etags)):
            again = await put_async(processor_settings, f"{batch_id}/{name}", image_bytes(64 + i, 48, seed=i))
            assert again == etags[name]
        await eventually(lambda: _duplicates_settled(worker, 3 * COUNT), what="duplicates handled")

    batch = await repository.get_batch(batch_id)
    assert (batch.total, batch.completed, batch.failed) == (COUNT, COUNT, 0)
    assert await repository.events_since(batch_id) == before, "no new event for a duplicate"
    assert len(output_keys(processor_settings, f"{batch_id}/")) == COUNT
    snapshot = await repository.batch_snapshot(batch_id)
    assert all(i.attempts == 1 for i in snapshot.images), "no image was claimed twice"
    assert sorted(progress.distinct(batch_id)) == list(range(1, COUNT + 2))


async def _duplicates_settled(worker, n: int) -> bool:
    return worker.metrics.messages.labels("duplicate")._value.get() >= n
