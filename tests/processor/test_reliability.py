"""Faults with real processes: ``kill -9`` of a worker mid-batch, two workers on one queue, and a
RabbitMQ restart during a batch (on a private node, never the shared one)."""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Callable

import pytest

from db.repository import Repository
from ingest.notifications import configure_bucket_notifications
from photoenhance.contracts.keys import MANIFEST_NAME
from photoenhance.contracts.progress import EventType
from photoenhance.contracts.states import ImageState
from photoenhance.settings import Settings
from tests.support.broker import PrivateBroker
from tests.support.processor import (
    WorkerProcess,
    batch_completed,
    eventually,
    free_port,
    image_bytes,
    output_keys,
    put_async,
)

pytestmark = [pytest.mark.objectstore, pytest.mark.reliability]


async def upload(settings: Settings, batch_id: str, count: int, pause_s: float = 0.0) -> None:
    manifest = {"expected_count": count, "options": {"quality": "fast", "upscale": 2}}
    await put_async(settings, f"{batch_id}/{MANIFEST_NAME}", json.dumps(manifest).encode())
    for i in range(count):
        await put_async(settings, f"{batch_id}/img-{i:02d}.jpg", image_bytes(96, 64, seed=i))
        await asyncio.sleep(pause_s)


async def completed_count(repository: Repository, batch_id: str) -> int:
    batch = await repository.get_batch(batch_id)
    return 0 if batch is None else batch.completed


async def assert_each_completed_once(repository: Repository, settings: Settings, batch_id: str, count: int) -> None:
    batch = await batch_completed(repository, batch_id)
    assert (batch.total, batch.completed, batch.failed) == (count, count, 0)
    events = await repository.events_since(batch_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    per_name = collections.Counter(e.image.name for e in events if e.type is EventType.IMAGE_COMPLETED)
    assert per_name == {f"img-{i:02d}.jpg": 1 for i in range(count)}, "every image completed exactly once"
    assert sum(e.type is EventType.BATCH_COMPLETED for e in events) == 1
    snapshot = await repository.batch_snapshot(batch_id)
    assert all(i.state is ImageState.COMPLETED for i in snapshot.images)
    assert output_keys(settings, f"{batch_id}/") == sorted(f"{batch_id}/img-{i:02d}.jpg" for i in range(count))


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_kill_9_mid_batch_then_a_new_worker_completes_every_image_once(
    processor_settings: Settings, repository: Repository, worker_processes: Callable[..., WorkerProcess],
    record_property,
) -> None:
    batch_id, count = "killed", 30
    first = worker_processes(processor_settings, "first")
    first.wait_healthy()
    uploading = asyncio.create_task(upload(processor_settings, batch_id, count))
    await eventually(lambda: _at_least(repository, batch_id, 3), what="the first results")
    first.kill()
    at_kill = await completed_count(repository, batch_id)
    record_property("completed_when_killed", at_kill)
    assert at_kill < count, "the kill came in the middle of the batch"
    await uploading

    second = worker_processes(processor_settings.replace(processor_port=free_port()), "second")
    second.wait_healthy()
    await assert_each_completed_once(repository, processor_settings, batch_id, count)
    snapshot = await repository.batch_snapshot(batch_id)
    workers = collections.Counter(i.report["worker"] for i in snapshot.images)
    record_property("completed_by", dict(workers))
    assert workers["second"] == count - at_kill
    assert second.terminate() == 0, second.log()


async def _at_least(repository: Repository, batch_id: str, n: int) -> bool:
    return await completed_count(repository, batch_id) >= n


async def test_two_workers_with_prefetch_2_share_the_work_and_do_nothing_twice(
    processor_settings: Settings, repository: Repository, worker_processes: Callable[..., WorkerProcess],
    record_property,
) -> None:
    batch_id, count = "shared", 20
    settings = processor_settings.replace(prefetch=2)
    workers = [
        worker_processes(settings.replace(processor_port=free_port()), name) for name in ("left", "right")
    ]
    for worker in workers:
        worker.wait_healthy()
    await upload(settings, batch_id, count)
    await assert_each_completed_once(repository, settings, batch_id, count)
    snapshot = await repository.batch_snapshot(batch_id)
    split = collections.Counter(i.report["worker"] for i in snapshot.images)
    record_property("split", dict(split))
    assert set(split) == {"left", "right"} and sum(split.values()) == count, split
    assert all(i.attempts == 1 for i in snapshot.images), "no image was claimed twice"
    processed = [_metric(w.metrics(), "photoenhance_images_processed_total") for w in workers]
    assert processed == [split["left"], split["right"]]
    for worker in workers:
        assert worker.terminate() == 0, worker.log()


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


async def test_rabbitmq_restart_during_a_batch(
    processor_settings: Settings, repository: Repository, worker_processes: Callable[..., WorkerProcess],
    private_broker: PrivateBroker, record_property,
) -> None:
    """The worker, the store's notifications and the reconciler all use a private RabbitMQ node,
    which is restarted while the batch is being uploaded and processed."""
    batch_id, count = "restarted", 12
    settings = processor_settings.replace(
        amqp_url=private_broker.url, reconcile_interval_s=2, reconcile_grace_s=1
    )
    worker = worker_processes(settings, "survivor")
    worker.wait_healthy()  # the worker has declared the topology on the private node
    await asyncio.to_thread(configure_bucket_notifications, settings)  # RGW now publishes to the private node

    uploading = asyncio.create_task(upload(settings, batch_id, count, pause_s=0.3))
    await eventually(lambda: _at_least(repository, batch_id, 2), what="the first results")
    before = await completed_count(repository, batch_id)
    await asyncio.to_thread(private_broker.restart)
    record_property("completed_before_restart", before)
    await uploading
    await assert_each_completed_once(repository, settings, batch_id, count)
    await asyncio.to_thread(worker.wait_healthy, 60)
    assert before < count
    assert worker.terminate() == 0, worker.log()
