"""Cancel in the middle of a 100-image ``fast`` batch, through the real stack (ingest, notifier,
a worker process, the store's notifications, RabbitMQ): results only for what was claimed, exact
counts, ``batch.cancelled`` last, the archive holds what was done, a later upload is ignored."""

from __future__ import annotations

import asyncio
import io
import time
import zipfile

import aiohttp
import pytest

from db.repository import Repository
from harness.processor import ProgressRecorder, eventually, image_bytes, output_keys, put_async
from harness.stack import StartStack
from photoenhance.contracts.progress import EventType
from photoenhance.contracts.states import BatchState, ImageState

pytestmark = [pytest.mark.objectstore]

COUNT = 100


async def test_cancel_mid_batch_keeps_what_was_claimed_and_ends_with_batch_cancelled(
    start_stack: StartStack, repository: Repository
) -> None:
    # Two in flight at a time and 4x upscales of 640x480 photos: a pace a poll can cancel in the middle of.
    stack = await start_stack(processor=False, prefetch=2)
    settings = stack.settings
    photos = [image_bytes(640, 480, seed=i) for i in range(COUNT)]
    files = [{"name": f"p{i:03d}.jpg", "size": len(photos[i]), "content_type": "image/jpeg"} for i in range(COUNT)]
    async with aiohttp.ClientSession(stack.ingest_url) as http, ProgressRecorder(settings) as progress:
        async with http.post("/api/v1/batches", json={"files": files, "options": {"quality": "fast", "upscale": 4}}) as response:
            assert response.status == 201, await response.text()
            created = await response.json()
        batch_id, auth = created["batch_id"], {"Authorization": f"Bearer {created['token']}"}
        for i in range(COUNT):
            await put_async(settings, f"{batch_id}/p{i:03d}.jpg", photos[i])
        # The worker starts once every upload waits in the queue, so the cancel lands mid-batch.
        await asyncio.to_thread(stack.start_processor)
        deadline = time.monotonic() + 120
        while (await repository.get_batch(batch_id)).completed < 5:
            assert time.monotonic() < deadline, stack.logs()
            await asyncio.sleep(0.02)
        async with http.post(f"/api/v1/batches/{batch_id}/cancel", headers=auth) as response:
            answer = await response.json()
            assert response.status == 202, answer
        assert answer["state"] in ("cancelling", "cancelled") and answer["cancelled_now"] > 0, answer

        async def ended() -> bool:
            batch = await repository.get_batch(batch_id)
            return batch.state is BatchState.CANCELLED

        await eventually(ended, what="the batch to end cancelled")
        # An upload under the prefix after the cancel is ignored.
        await put_async(settings, f"{batch_id}/late.jpg", image_bytes(64, 48, seed=999))

        async def late_seen() -> bool:
            return any(i.name == "late.jpg" for i in await repository.unfinished_images(batch_id)) or (
                await repository.find_image(settings.s3_input_bucket, f"{batch_id}/late.jpg", _etag_of(stack, batch_id))
            ) is not None

        await eventually(late_seen, what="the late upload to be handled")
        async with http.post(f"/api/v1/batches/{batch_id}/cancel", headers=auth) as response:
            assert response.status == 202 and (await response.json())["state"] == "cancelled"
        async with http.get(f"/api/v1/batches/{batch_id}/archive", headers=auth) as response:
            assert response.status == 200
            archive = zipfile.ZipFile(io.BytesIO(await response.read()))
        async with http.get(f"/api/v1/batches/{batch_id}", headers=auth) as response:
            status = await response.json()
        deadline = time.monotonic() + 30
        while len(progress.distinct(batch_id)) < (await repository.get_batch(batch_id)).last_seq:
            assert time.monotonic() < deadline, "every event published"
            await asyncio.sleep(0.2)

    batch = await repository.get_batch(batch_id)
    snapshot = await repository.batch_snapshot(batch_id)
    by_state: dict[ImageState, list] = {}
    for image in snapshot.images:
        by_state.setdefault(image.state, []).append(image)
    completed = by_state.get(ImageState.COMPLETED, [])
    cancelled = by_state.get(ImageState.CANCELLED, [])
    failed = by_state.get(ImageState.FAILED, [])
    # Counts exact: each declared file is completed, failed or cancelled, and the counters say so;
    # uploads announced after the cancel were ignored (not processed, counted nor listed).
    assert (batch.total, batch.completed, batch.failed, batch.cancelled) == (
        COUNT, len(completed), len(failed), len(cancelled)
    )
    assert len(snapshot.images) == COUNT and 5 <= len(completed) < COUNT
    assert len(completed) + len(failed) == answer["counts"]["completed"] + answer["counts"]["in_flight"]
    # Results only for what was claimed: a cancelled image was never claimed and has no result.
    assert all(i.attempts == 0 and i.output_key is None for i in cancelled)
    assert output_keys(settings, f"{batch_id}/") == sorted(i.output_key for i in completed)
    assert "late.jpg" not in {i.name for i in snapshot.images}
    # The event log: one event per finished image, then batch.cancelled, gapless, last.
    events = await repository.events_since(batch_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.type for e in events[:-1]].count(EventType.IMAGE_COMPLETED) == len(completed)
    assert events[-1].type is EventType.BATCH_CANCELLED and len(events) == len(completed) + len(failed) + 1
    assert events[-1].counts.cancelled == len(cancelled)
    published = progress.distinct(batch_id)
    assert max(published) == events[-1].seq and published[max(published)].type is EventType.BATCH_CANCELLED
    # The archive holds what was done, and says what was not.
    names = set(archive.namelist())
    assert names == {i.output_key.split("/", 1)[1] for i in completed} | {"FAILURES.txt"}
    assert archive.read("FAILURES.txt").decode().count("the batch was cancelled") == len(cancelled)
    assert status["state"] == "cancelled" and status["counts"]["cancelled"] == len(cancelled)
    assert status["counts"]["pending"] == 0
    listed = [i["state"] for i in status["images"]]
    assert (listed.count("completed"), listed.count("cancelled"), len(listed)) == (len(completed), len(cancelled), COUNT)
    print(f"cancelled with {answer['counts']['completed']} of {COUNT} done, {answer['cancelled_now']} kept from "
          f"processing; in the end {len(completed)} completed, {len(failed)} failed, {len(cancelled)} cancelled, "
          f"{len(events)} events")


def _etag_of(stack, batch_id: str) -> str:
    from photoenhance.s3 import minio_client

    return minio_client(stack.settings).stat_object(stack.settings.s3_input_bucket, f"{batch_id}/late.jpg").etag
