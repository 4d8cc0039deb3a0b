"""The reconciler finds what no event announced, re-queues crashed workers' images, completes idle batches."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime

import aio_pika
import pytest

from db.records import ImageRecord, ImageVersion
from db.repository import DeclaredFile, Repository
from harness.processor import (
    REPO,
    AnnouncementTap,
    batch_completed,
    eventually,
    image_bytes,
    output_keys,
    put_async,
    running_worker,
)
from photoenhance.contracts.events import notification_body
from photoenhance.contracts.progress import EventType
from photoenhance.contracts.states import BatchState, ImageState
from photoenhance.settings import Settings
from processor.queues import declare_processor_queues

pytestmark = pytest.mark.objectstore

FAST = {"photoenhance-quality": "fast"}


async def completed_names(repository: Repository, batch_id: str) -> set[str]:
    snapshot = await repository.batch_snapshot(batch_id)
    return {i.name for i in snapshot.images if i.state is ImageState.COMPLETED} if snapshot else set()


def reconcile_cli(settings: Settings) -> dict[str, int]:
    """``photoenhance reconcile`` once, as a separate process; returns its report."""
    result = subprocess.run(
        [sys.executable, "-m", "photoenhance", "reconcile"],
        cwd=REPO, env={**settings.to_env(), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


async def set_binding(settings: Settings, bound: bool) -> None:
    """Switch the notification path to the work queue off (unbind) or on again."""
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(settings.amqp_work_queue)
        exchange = await channel.get_exchange(settings.amqp_events_exchange)
        if bound:
            await queue.bind(exchange, settings.amqp_events_routing_key)
        else:
            await queue.unbind(exchange, settings.amqp_events_routing_key)
    finally:
        await connection.close()


async def poison(settings: Settings, body: bytes) -> None:
    """Publish ``body`` and take it off the work queue until the delivery limit dead-letters it, as
    workers crashing on it each time would (nack + requeue counts as a delivery)."""
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queues = await declare_processor_queues(channel, settings)
        await queues.topology.events_exchange.publish(aio_pika.Message(body), settings.amqp_events_routing_key)
        deliveries = 0
        while True:  # each "worker" takes the message and dies on it (nack + requeue counts as a delivery)
            message = await queues.topology.work_queue.get(fail=False)
            if message is None:
                await asyncio.sleep(0.1)
                if deliveries > settings.amqp_delivery_limit:
                    break
                continue
            deliveries += 1
            await message.nack(requeue=True)
    finally:
        await connection.close()
    assert deliveries == settings.amqp_delivery_limit + 1


async def test_an_upload_whose_notification_was_lost_is_completed_by_the_reconciler(
    processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    batch_id = "lost-one"
    async with running_worker(processor_settings, fast_engine):
        for i in range(3):
            await put_async(processor_settings, f"{batch_id}/seen-{i}.jpg", image_bytes(seed=i), FAST)
        await eventually(lambda: _has_n(repository, batch_id, 3), what="the announced images")

        async with AnnouncementTap(processor_settings) as tap:
            await set_binding(processor_settings, bound=False)
            await put_async(processor_settings, f"{batch_id}/lost.jpg", image_bytes(seed=7), FAST)
            await tap.announced(f"{batch_id}/lost.jpg")  # routed while the work queue was unbound
        await set_binding(processor_settings, bound=True)
        # Past the idle time: only the unannounced object keeps the next pass from completing it.
        await asyncio.sleep(processor_settings.batch_idle_seconds + 0.5)
        assert "lost.jpg" not in await completed_names(repository, batch_id), "its event really was lost"

        report = await asyncio.to_thread(reconcile_cli, processor_settings)
        assert report["announced"] == 1 and report["batches_completed"] == 0, report
        await eventually(lambda: _has_n(repository, batch_id, 4), what="the reconciled image")

        # no expected count: the batch completes once idle, at a reconciler pass
        batch = await repository.get_batch(batch_id)
        assert batch.state is BatchState.OPEN and batch.expected_count is None
        await asyncio.sleep(processor_settings.batch_idle_seconds + 0.5)
        report = await asyncio.to_thread(reconcile_cli, processor_settings)
        assert report["batches_completed"] == 1 and report["announced"] == 0
    batch = await batch_completed(repository, batch_id, timeout=5)
    assert (batch.total, batch.completed) == (4, 4)
    assert len(output_keys(processor_settings, f"{batch_id}/")) == 4
    assert (await repository.events_since(batch_id))[-1].type is EventType.BATCH_COMPLETED


async def _has_n(repository: Repository, batch_id: str, n: int) -> bool:
    return len(await completed_names(repository, batch_id)) >= n


async def test_an_expired_lease_is_requeued_and_completed(
    processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    """A worker claimed an image and vanished with its message (both lost): the lease runs out and
    the worker's own periodic reconciler pass brings the image back."""
    batch_id = "crashed"
    settings = processor_settings.replace(reconcile_interval_s=1)
    etag = await put_async(settings, f"{batch_id}/a.jpg", image_bytes(), FAST)
    # the upload's own notification sits in the queue; take it away, as if a dead worker had held it
    connection = await aio_pika.connect(settings.amqp_url)
    channel = await connection.channel()
    await declare_processor_queues(channel, settings)
    queue = await channel.get_queue(settings.amqp_work_queue)
    message = await eventually(lambda: queue.get(fail=False), timeout=30, what="the notification")
    await message.ack()
    await connection.close()
    await repository.ensure_batch(batch_id, input_bucket=settings.s3_input_bucket, options={})
    registered = await repository.register_image(
        ImageVersion(settings.s3_input_bucket, batch_id, f"{batch_id}/a.jpg", "a.jpg", etag, 10,
                     datetime.now(UTC))
    )
    assert await repository.claim_image(registered.image.id, "dead-worker", lease_seconds=1)

    async with running_worker(settings, fast_engine):
        await eventually(lambda: _has_n(repository, batch_id, 1), what="the requeued image")
    image = await repository.get_image(registered.image.id)
    assert image.attempts == 2 and image.report["worker"] != "dead-worker"


async def test_a_poison_message_is_dead_lettered_and_its_image_failed(
    processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    """Deliveries that never end (a worker crashing on the message each time) hit the delivery limit;
    the worker's dead-letter watch then marks the image failed and the batch can complete."""
    settings = processor_settings
    batch_id = "poison"
    await repository.create_batch(batch_id, input_bucket=settings.s3_input_bucket, options={"quality": "fast"},
                                  expected_count=1)
    await poison(settings, notification_body(settings.s3_input_bucket, f"{batch_id}/p.jpg", "0123abcd", 10,
                                             datetime.now(UTC)))

    async with running_worker(settings, fast_engine):
        batch = await batch_completed(repository, batch_id)
    [image] = (await repository.batch_snapshot(batch_id)).images
    assert image.state is ImageState.FAILED and image.code == "delivery_limit"
    assert settings.amqp_dead_letter_exchange in image.reason
    assert (batch.total, batch.failed) == (1, 1)


async def test_declared_uploads_that_never_arrive_are_failed_once_their_links_expire(
    processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    """An API batch declared three files and only two were uploaded: once the upload links have
    expired the reconciler fails the third (``upload_missing``) and the batch completes; when the
    file is uploaded after all, it supersedes that failure and is enhanced."""
    batch_id = "half-uploaded"
    settings = processor_settings.replace(presign_expiry_s=1, reconcile_grace_s=0)
    files = [DeclaredFile(name, name, 1000, "image/jpeg") for name in ("a.jpg", "b.jpg", "c.jpg")]
    await repository.create_batch(batch_id, input_bucket=settings.s3_input_bucket, options={"quality": "fast"},
                                  source="api", expected_count=3, files=files)
    async with running_worker(settings, fast_engine):
        for i, name in enumerate(("a.jpg", "b.jpg")):
            await put_async(settings, f"{batch_id}/{name}", image_bytes(seed=i), FAST)
        await eventually(lambda: _has_n(repository, batch_id, 2), what="the two uploads")
        await asyncio.sleep(1.2)  # the upload links (PRESIGN_EXPIRY_S=1) are past
        report = reconcile_cli(settings)
        assert report["uploads_missing"] == 1 and report["batches_completed"] == 1
        batch = await repository.get_batch(batch_id)
        assert (batch.state, batch.total, batch.completed, batch.failed) == (BatchState.COMPLETED, 3, 2, 1)
        missing = [i for i in (await repository.batch_snapshot(batch_id)).images if i.name == "c.jpg"]
        assert [(i.state, i.code) for i in missing] == [(ImageState.FAILED, "upload_missing")]
        assert reconcile_cli(settings)["uploads_missing"] == 0, "a second pass changes nothing"

        await put_async(settings, f"{batch_id}/c.jpg", image_bytes(seed=9), FAST)
        await eventually(lambda: _has_n(repository, batch_id, 3), what="the late upload")
    batch = await batch_completed(repository, batch_id)
    assert (batch.total, batch.completed, batch.failed) == (3, 3, 0)
    events = await repository.events_since(batch_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_a_dead_letter_spares_an_image_a_live_worker_holds(
    processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    """A duplicate announcement dies (delivery limit) while a worker holds the image under a live
    lease: the dead-letter watch waits instead of failing it, the holder completes it; an image
    whose holder's lease runs out is failed as before."""
    settings = processor_settings
    batch_id = "held"
    await repository.create_batch(batch_id, input_bucket=settings.s3_input_bucket, options={"quality": "fast"},
                                  expected_count=2)
    now = datetime.now(UTC)
    held, crashed = [
        (await repository.register_image(
            ImageVersion(settings.s3_input_bucket, batch_id, f"{batch_id}/{name}", name, "0123abcd", 10, now)
        )).image
        for name in ("held.jpg", "crashed.jpg")
    ]
    assert await repository.claim_image(held.id, "live-worker", lease_seconds=120)
    assert await repository.claim_image(crashed.id, "dead-worker", lease_seconds=3)
    for image in (held, crashed):
        await poison(settings, notification_body(settings.s3_input_bucket, image.key, "0123abcd", 10, now))

    async with running_worker(settings, fast_engine):
        failed = await eventually(lambda: _failed(repository, crashed.id), what="the crashed worker's image")
        assert failed.code == "delivery_limit"
        assert (await repository.get_image(held.id)).state is ImageState.PROCESSING, "a live lease is spared"
        assert await repository.complete_image(held.id, "live-worker", output_key=f"{batch_id}/held.jpg")
        batch = await batch_completed(repository, batch_id)
    assert (batch.completed, batch.failed) == (1, 1)
    assert (await repository.get_image(held.id)).state is ImageState.COMPLETED


async def _failed(repository: Repository, image_id: int) -> ImageRecord | None:
    image = await repository.get_image(image_id)
    return image if image is not None and image.state is ImageState.FAILED else None
