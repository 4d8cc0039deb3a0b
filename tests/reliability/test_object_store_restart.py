"""The object store goes away in the middle of a batch and comes back.

The session's Ceph RGW is stopped while a worker process is fetching and storing images (SIGTERM,
not SIGKILL: the worker sees the same refused connections either way, and once a killed radosgw
died again ~20 s after its restart here, which would break every later test of the session):
every GET and PUT fails while it is down. The worker must treat that as transient
(``storage_unavailable``), hand the claims back, retry after its back-off, stay up, and finish the
batch exactly once after the store is back, with no image failed and no result written twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from db.repository import Repository
from harness.objectstore import ObjectStore
from harness.processor import ProgressRecorder, WorkerProcess, eventually
from photoenhance.settings import Settings
from tests.reliability.exactly_once import (
    assert_exactly_once,
    completed_at_least,
    completed_count,
    metric,
    metric_at_least,
    upload_batch,
)

pytestmark = [pytest.mark.objectstore, pytest.mark.reliability]

IMAGES = 40
#: Back-off 250 ms doubling to 4 s, 10 attempts: ~24 s of retrying before an image is given up,
#: several times the outage below (a stop and start of radosgw takes ~2-6 s here).
RETRIES = {"retry_base_delay_ms": 250, "retry_max_delay_ms": 4000, "retry_max_attempts": 10}
#: How long the store stays down once it is gone (on top of the time it takes to start again).
DOWN_FOR_S = 2.0


async def test_object_store_restart_mid_batch_then_every_image_completes_once(
    processor_settings: Settings, repository: Repository, object_store: ObjectStore,
    worker_processes: Callable[..., WorkerProcess], progress: ProgressRecorder,
    record_property: Callable[[str, object], None],
) -> None:
    if not object_store.can_restart:
        pytest.skip("the object store is run by someone else (TEST_S3_ENDPOINT): it cannot be restarted")
    batch_id = "store-restart"
    # Prefetch 2 keeps most of the batch waiting in the queue when the store goes.
    settings = processor_settings.replace(prefetch=2, **RETRIES)
    # Every upload first: uploads need the store, and the queue holds the notifications meanwhile.
    sources = await upload_batch(settings, batch_id, IMAGES)

    worker = worker_processes(settings, "weathering")
    await asyncio.to_thread(worker.wait_healthy)
    await eventually(lambda: completed_at_least(repository, batch_id, 3), what="the first results")
    try:
        await asyncio.to_thread(object_store.stop, kill=False)
        at_stop = await completed_count(repository, batch_id)
        await eventually(
            lambda: metric_at_least(worker, 1, "photoenhance_retries_total", reason="storage_unavailable"),
            what="the worker to meet the dead store",
        )
        await asyncio.sleep(DOWN_FOR_S)
        status = worker.health()
        assert status is not None and status["ok"], f"the worker stays up while the store is down: {status}"
    finally:
        await asyncio.to_thread(object_store.start)
    record_property("completed_at_stop", at_stop)
    assert at_stop < IMAGES, "the store went away in the middle of the batch"

    await assert_exactly_once(repository, settings, batch_id, sources, recorder=progress)
    metrics = worker.metrics()
    record_property("storage_retries", metric(metrics, "photoenhance_retries_total", reason="storage_unavailable"))
    assert metric(metrics, "photoenhance_images_failed_total") == 0
    assert metric(metrics, "photoenhance_images_processed_total") == IMAGES
    assert worker.terminate() == 0, worker.log()
