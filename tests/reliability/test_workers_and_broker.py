"""Faults with real processes: ``kill -9`` of a worker mid-batch, two workers on one queue, and a
RabbitMQ restart during a batch (on a private node, never the shared one). Each ends with the
exactly-once check of :mod:`tests.reliability.exactly_once`."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

import pytest

from db.repository import Repository
from harness.broker import PrivateBroker
from harness.processor import ProgressRecorder, WorkerProcess, eventually, free_port
from photoenhance.settings import Settings
from provision.notifications import configure_bucket_notifications
from tests.reliability.exactly_once import (
    assert_exactly_once,
    completed_at_least,
    completed_count,
    metric,
    upload_batch,
)

pytestmark = [pytest.mark.objectstore, pytest.mark.reliability]

#: Size of the pictures these tests upload.
SIZE = (96, 64)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_kill_9_mid_batch_then_a_new_worker_completes_every_image_once(
    processor_settings: Settings, repository: Repository, worker_processes: Callable[..., WorkerProcess],
    progress: ProgressRecorder, record_property: Callable[[str, object], None],
) -> None:
    """A worker is SIGKILLed while the batch arrives (claims held, results half made); a new
    worker takes over once the dead one's leases run out and finishes exactly the rest."""
    batch_id, count = "killed", 30
    first = worker_processes(processor_settings, "first")
    await asyncio.to_thread(first.wait_healthy)
    # Spaced uploads: the batch is still arriving when the kill comes.
    uploading = asyncio.create_task(upload_batch(processor_settings, batch_id, count, size=SIZE, pause_s=0.05))
    await eventually(lambda: completed_at_least(repository, batch_id, 3), what="the first results")
    first.kill()
    at_kill = await completed_count(repository, batch_id)
    record_property("completed_when_killed", at_kill)
    assert at_kill < count, "the kill came in the middle of the batch"
    sources = await uploading

    second = worker_processes(processor_settings.replace(processor_port=free_port()), "second")
    await asyncio.to_thread(second.wait_healthy)
    # The dead worker's last commit may never have been published: its redelivered message makes
    # the new worker publish it again, so the stream is complete all the same.
    await assert_exactly_once(repository, processor_settings, batch_id, sources, recorder=progress)
    snapshot = await repository.batch_snapshot(batch_id)
    assert snapshot is not None
    workers = collections.Counter(i.report["worker"] for i in snapshot.images if i.report)
    record_property("completed_by", dict(workers))
    assert workers["second"] == count - at_kill, "the new worker did exactly what the dead one had not recorded"
    assert second.terminate() == 0, second.log()


async def test_two_workers_with_prefetch_2_share_the_work_and_do_nothing_twice(
    processor_settings: Settings, repository: Repository, worker_processes: Callable[..., WorkerProcess],
    progress: ProgressRecorder, record_property: Callable[[str, object], None],
) -> None:
    """Two workers on one queue split a batch; no image is claimed twice."""
    batch_id, count = "shared", 20
    settings = processor_settings.replace(prefetch=2)
    workers = [
        worker_processes(settings.replace(processor_port=free_port()), name) for name in ("left", "right")
    ]
    for worker in workers:
        await asyncio.to_thread(worker.wait_healthy)
    sources = await upload_batch(settings, batch_id, count, size=SIZE)
    await assert_exactly_once(repository, settings, batch_id, sources, recorder=progress)
    snapshot = await repository.batch_snapshot(batch_id)
    assert snapshot is not None
    split = collections.Counter(i.report["worker"] for i in snapshot.images if i.report)
    record_property("split", dict(split))
    assert set(split) == {"left", "right"} and sum(split.values()) == count, split
    assert all(i.attempts == 1 for i in snapshot.images), "no image was claimed twice"
    processed = [metric(w.metrics(), "photoenhance_images_processed_total") for w in workers]
    assert processed == [split["left"], split["right"]]
    for worker in workers:
        assert worker.terminate() == 0, worker.log()


async def test_rabbitmq_restart_during_a_batch(
    processor_settings: Settings, repository: Repository, worker_processes: Callable[..., WorkerProcess],
    private_broker: PrivateBroker, record_property: Callable[[str, object], None],
) -> None:
    """The worker, the store's notifications and the reconciler all use a private RabbitMQ node,
    which is restarted while the batch is being uploaded and processed. Notifications published
    while it is down are lost by the store (RGW drops them), so the reconciler must find them."""
    batch_id, count = "restarted", 12
    settings = processor_settings.replace(
        amqp_url=private_broker.url, reconcile_interval_s=2, reconcile_grace_s=1
    )
    worker = worker_processes(settings, "survivor")
    worker.wait_healthy()  # the worker has declared the topology on the private node
    await asyncio.to_thread(configure_bucket_notifications, settings)  # RGW now publishes to the private node

    uploading = asyncio.create_task(upload_batch(settings, batch_id, count, size=SIZE, pause_s=0.3))
    await eventually(lambda: completed_at_least(repository, batch_id, 2), what="the first results")
    before = await completed_count(repository, batch_id)
    await asyncio.to_thread(private_broker.restart)
    record_property("completed_before_restart", before)
    sources = await uploading
    await assert_exactly_once(repository, settings, batch_id, sources)
    await asyncio.to_thread(worker.wait_healthy, 60)
    assert before < count
    assert worker.terminate() == 0, worker.log()
