"""The fleet: workers say what they serve (their row, `photoenhance workers`), and each level has
its own queue, consumed only by the workers serving that level."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from db.connection import Database
from db.repository import Repository
from db.workers import WorkerRegistry
from harness.processor import REPO, eventually, free_port, image_bytes, put_async, running_worker
from photoenhance.contracts.options import Quality
from photoenhance.contracts.states import ImageState
from photoenhance.settings import Settings
from photoenhance.topology import level_queue_name

#: Worker rows, level routing and waiting hold on both engines the fleet may share.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


def workers_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.to_env()}
    return subprocess.run(
        [sys.executable, "-m", "photoenhance", "workers", *args], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=120,
    )


@pytest.mark.objectstore
async def test_a_worker_has_a_row_while_it_runs_and_the_cli_lists_it(
    processor_settings: Settings, database: Database, fast_engine
) -> None:
    registry = WorkerRegistry(database, gone_after_s=processor_settings.worker_gone_after_s)
    async with running_worker(processor_settings, fast_engine, worker_id="fleet-w1"):
        [row] = await registry.live()
        assert (row.id, row.levels, row.device) == ("fleet-w1", ("fast",), "cpu")
        listed = await asyncio.to_thread(workers_cli, processor_settings, "--json")
        assert listed.returncode == 0, listed.stderr
        [shown] = json.loads(listed.stdout)
        assert shown["id"] == "fleet-w1" and shown["levels"] == ["fast"]
        table = await asyncio.to_thread(workers_cli, processor_settings)
        assert "fleet-w1" in table.stdout and "fast" in table.stdout
    assert await registry.live() == []  # a clean stop removed the row
    after = await asyncio.to_thread(workers_cli, processor_settings)
    assert after.stdout.strip() == "no live workers"


@pytest.mark.objectstore
async def test_the_heartbeat_refreshes_the_row(
    processor_settings: Settings, database: Database, fast_engine
) -> None:
    settings = processor_settings.replace(worker_beat_s=0.3)
    registry = WorkerRegistry(database, gone_after_s=settings.worker_gone_after_s)
    async with running_worker(settings, fast_engine, worker_id="fleet-beat"):
        [first] = await registry.live()
        await asyncio.sleep(1.0)
        [later] = await registry.live()
    assert later.last_beat_at > first.last_beat_at and later.started_at == first.started_at


# -- a queue per level -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def network_engine(random_weights_dir: Path) -> Iterator[Any]:
    """An engine serving balanced and best, with random weights in the real file formats."""
    from processor.engine import Engine

    settings = Settings(weights_dir=random_weights_dir, allow_custom_weights=True, device="cpu")
    engine = Engine.load(settings, qualities=[Quality.BALANCED, Quality.BEST])
    yield engine
    engine.close()


def as_worker(settings: Settings, *levels: str) -> Settings:
    """The test's settings for a worker serving ``levels`` (a health port of its own)."""
    return settings.replace(processor_qualities=levels, processor_port=free_port())


async def queue_depth(settings: Settings, level: str) -> int:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(level_queue_name(settings, level), passive=True)
        return queue.declaration_result.message_count
    finally:
        await connection.close()


@pytest.mark.objectstore
async def test_each_image_goes_to_a_worker_of_its_level_once(
    processor_settings: Settings, repository: Repository, fast_engine, network_engine
) -> None:
    """A fast-only and a balanced-only worker on one batch whose images ask for levels by metadata."""
    batch_id = "levels-mixed"
    wanted = {f"{batch_id}/f{i}.jpg": "fast" for i in range(5)} | {f"{batch_id}/b{i}.jpg": "balanced" for i in range(2)}
    fast = as_worker(processor_settings, "fast")
    balanced = as_worker(processor_settings, "balanced")
    async with running_worker(fast, fast_engine, "fast-only"), running_worker(balanced, network_engine, "balanced-only"):
        for i, (key, level) in enumerate(sorted(wanted.items())):
            await put_async(processor_settings, key, image_bytes(48, 32, seed=i), {"photoenhance-quality": level})
        images = await eventually(lambda: final_images(repository, batch_id, len(wanted)))
    by_worker = collections.Counter()
    for image in images:
        level = wanted[image.key]
        assert image.state is ImageState.COMPLETED, (image.key, image.code, image.reason)
        assert image.level == level and image.attempts == 1, (image.key, image.level, image.attempts)
        assert image.report["worker"] == f"{level}-only"
        by_worker[image.report["worker"]] += 1
    assert by_worker == {"fast-only": 5, "balanced-only": 2}
    batch = await repository.get_batch(batch_id)
    assert (batch.total, batch.completed, batch.failed) == (7, 7, 0)


@pytest.mark.objectstore
async def test_a_worker_reports_a_speed_per_level_before_its_first_image(
    processor_settings: Settings, database: Database, fast_engine, network_engine
) -> None:
    """Start-up self-timing (WORKER_SELF_TIMING, on by default): the row a worker announces itself
    with already holds seconds per megapixel for each of its levels, so estimates exist at once."""
    registry = WorkerRegistry(database, gone_after_s=processor_settings.worker_gone_after_s)
    fast = as_worker(processor_settings, "fast").replace(worker_self_timing=True)
    balanced = as_worker(processor_settings, "balanced").replace(worker_self_timing=True)
    async with running_worker(fast, fast_engine, "timed-fast"), running_worker(balanced, network_engine, "timed-bal"):
        rows = {row.id: row for row in await registry.live()}
        assert set(rows["timed-fast"].speeds) == {"fast"} and rows["timed-fast"].speeds["fast"] > 0
        assert set(rows["timed-bal"].speeds) == {"balanced"} and rows["timed-bal"].speeds["balanced"] > 0
        # A network level costs more per megapixel than a resize, on any machine.
        assert rows["timed-bal"].speeds["balanced"] > rows["timed-fast"].speeds["fast"]


@pytest.mark.objectstore
async def test_an_image_waits_for_a_worker_of_its_level_then_is_processed(
    processor_settings: Settings, repository: Repository, database: Database, fast_engine, network_engine
) -> None:
    """A best image with only a fast worker running: pending at best, in the best queue once (the
    reconciler adds no copies); a best worker starts and completes it; counts exact."""
    from processor.reconciler import Reconciler
    from processor.storage import Storage

    batch_id = "levels-wait"
    fast = as_worker(processor_settings, "fast")
    async with running_worker(fast, fast_engine, "fast-only") as worker:
        await put_async(processor_settings, f"{batch_id}/quick.jpg", image_bytes(seed=1), {"photoenhance-quality": "fast"})
        await put_async(processor_settings, f"{batch_id}/best.jpg", image_bytes(seed=2), {"photoenhance-quality": "best"})
        await eventually(lambda: final_images(repository, batch_id, 1))

        async def waiting() -> Any:
            snapshot = await repository.batch_snapshot(batch_id)
            pending = [i for i in snapshot.images if i.state is ImageState.PENDING] if snapshot else []
            return pending if pending and pending[0].level == "best" else None

        [image] = await eventually(waiting, what="the best image to be registered at its level")
        assert await queue_depth(processor_settings, "best") == 1
        reconciler = Reconciler(
            fast, repository, Storage(fast, worker._executor), worker.pipeline.publisher,
            served_levels=WorkerRegistry(database, gone_after_s=fast.worker_gone_after_s).served_levels,
        )
        report = await reconciler.run_once()
        assert report.waiting_for_worker == 1 and report.pending_requeued == 0
        await asyncio.sleep(0.5)
        assert await queue_depth(processor_settings, "best") == 1
        batch = await repository.get_batch(batch_id)
        assert (batch.total, batch.completed, batch.failed) == (2, 1, 0)
        best = as_worker(processor_settings, "best")
        async with running_worker(best, network_engine, "best-only"):
            images = await eventually(lambda: final_images(repository, batch_id, 2))
    done = {i.name: i for i in images}
    assert done["best.jpg"].state is ImageState.COMPLETED and done["best.jpg"].report["worker"] == "best-only"
    assert done["best.jpg"].attempts == 1
    batch = await repository.get_batch(batch_id)
    assert (batch.total, batch.completed, batch.failed) == (2, 2, 0)
    assert all(i.code != "quality_not_loaded" for i in images)


def scrape(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def gauge(text: str, level: str) -> float | None:
    """The value of ``photoenhance_waiting_for_worker{level}`` in a /metrics page (None: absent)."""
    prefix = f'photoenhance_waiting_for_worker{{level="{level}"}} '
    values = [float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix)]
    return values[0] if values else None


@pytest.mark.objectstore
async def test_the_waiting_gauge_counts_images_per_level_no_worker_serves(
    processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    """Two best images with only a fast worker: its reconciler passes set the best gauge to 2 and the
    others to 0, on the worker's /metrics."""
    batch_id = "levels-gauge"
    fast = as_worker(processor_settings, "fast").replace(reconcile_interval_s=0.3)
    async with running_worker(fast, fast_engine, "fast-gauge"):
        for i in range(2):
            await put_async(fast, f"{batch_id}/best{i}.jpg", image_bytes(seed=10 + i), {"photoenhance-quality": "best"})
        await put_async(fast, f"{batch_id}/quick.jpg", image_bytes(seed=12), {"photoenhance-quality": "fast"})

        async def counted() -> str | None:
            text = await asyncio.to_thread(scrape, fast.processor_port)
            return text if gauge(text, "best") == 2 else None

        text = await eventually(counted, what="the best gauge to count the two waiting images")
    assert gauge(text, "fast") == 0 and gauge(text, "balanced") == 0


@pytest.mark.objectstore
async def test_an_image_nobody_serves_fails_after_the_level_wait(
    processor_settings: Settings, repository: Repository, database: Database, fast_engine
) -> None:
    from datetime import timedelta

    from db.models import utcnow
    from processor.reconciler import Reconciler
    from processor.storage import Storage

    batch_id = "levels-expire"
    settings = as_worker(processor_settings, "fast").replace(level_wait_max_s=3600)
    async with running_worker(settings, fast_engine, "fast-only") as worker:
        await put_async(settings, f"{batch_id}/best.jpg", image_bytes(seed=3), {"photoenhance-quality": "best"})

        async def registered() -> Any:
            snapshot = await repository.batch_snapshot(batch_id)
            return snapshot.images if snapshot and snapshot.images else None

        await eventually(registered)
        later = Reconciler(
            settings, repository, Storage(settings, worker._executor), worker.pipeline.publisher,
            clock=lambda: utcnow() + timedelta(seconds=3601),
            served_levels=WorkerRegistry(database, gone_after_s=settings.worker_gone_after_s).served_levels,
        )
        report = await later.run_once()
    assert report.level_wait_expired == 1
    [image] = (await repository.batch_snapshot(batch_id)).images
    assert image.state is ImageState.FAILED and image.code == "quality_not_served"
    assert "'best'" in image.reason


@pytest.mark.objectstore
async def test_an_unknown_level_fails_at_once_naming_the_valid_ones(
    processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    async with running_worker(processor_settings, fast_engine):
        await put_async(processor_settings, "levels-bad/a.jpg", image_bytes(), {"photoenhance-quality": "ultra"})
        [image] = await eventually(lambda: final_images(repository, "levels-bad", 1))
    assert image.state is ImageState.FAILED and image.code == "bad_options"
    assert "best, balanced, fast" in image.reason


async def final_images(repository: Repository, batch_id: str, n: int) -> Any:
    snapshot = await repository.batch_snapshot(batch_id)
    done = [i for i in snapshot.images if i.state.is_final] if snapshot else []
    return done if len(done) >= n else None


@pytest.mark.objectstore
async def test_an_unrouted_image_of_a_level_not_loaded_is_queued_at_its_level_not_failed(
    processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    """Defence in depth: should an image reach a worker without its level, it is handed back and
    queued at its level; quality_not_loaded is not an ending."""
    from photoenhance.contracts.events import notification_body, parse_notification
    from processor.pipeline import Outcome

    settings = processor_settings.replace(processor_routes=False)  # nobody routes: the test hands it over
    async with running_worker(settings, fast_engine) as worker:
        etag = await put_async(settings, "levels-stray/a.jpg", image_bytes(), {"photoenhance-quality": "best"})
        [record] = parse_notification(notification_body(settings.s3_input_bucket, "levels-stray/a.jpg", etag, 1,
                                                        datetime.now(UTC)))
        assert await worker.pipeline.process(record) is Outcome.RETRY
    [image] = (await repository.batch_snapshot("levels-stray")).images
    assert image.state is ImageState.PENDING and image.code is None
    assert await queue_depth(settings, "best") == 1


@pytest.mark.objectstore
async def test_a_direct_upload_without_a_level_gets_the_best_served_recorded_on_its_batch(
    processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    settings = processor_settings.replace(fleet_levels=())
    async with running_worker(settings, fast_engine):
        await put_async(settings, "levels-auto/a.jpg", image_bytes())
        [image] = await eventually(lambda: final_images(repository, "levels-auto", 1))
    assert image.state is ImageState.COMPLETED and image.level == "fast"
    assert (await repository.get_batch("levels-auto")).options == {"quality": "fast"}


@pytest.mark.objectstore
async def test_a_declared_level_counts_as_served_for_auto(
    processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    """FLEET_LEVELS=best (a scale-to-zero best deployment): auto picks best, and the image waits."""
    settings = processor_settings.replace(fleet_levels=("best",))
    async with running_worker(settings, fast_engine):
        await put_async(settings, "levels-declared/a.jpg", image_bytes())

        async def routed() -> Any:
            snapshot = await repository.batch_snapshot("levels-declared")
            return snapshot.images if snapshot and snapshot.images and snapshot.images[0].level else None

        [image] = await eventually(routed)
    assert image.state is ImageState.PENDING and image.level == "best"
    assert (await repository.get_batch("levels-declared")).options == {"quality": "best"}


@pytest.mark.objectstore
async def test_a_remembered_batch_whose_level_changed_is_not_processed_at_the_old_one(
    processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    """The router resolves levels from the batches it has read before; a manifest that moves the
    batch to a level this worker does not serve is seen in the start transaction, and the next
    image waits at the new level instead of being processed at the old one."""
    batch_id = "levels-moved"
    await repository.create_batch(batch_id, input_bucket=processor_settings.s3_input_bucket, options={"quality": "fast"})
    async with running_worker(as_worker(processor_settings, "fast"), fast_engine, "fast-only") as worker:
        await put_async(processor_settings, f"{batch_id}/first.jpg", image_bytes(seed=1))
        await eventually(lambda: final_images(repository, batch_id, 1))
        assert batch_id in worker.router._batches  # remembered: the next object is resolved without a read
        await repository.update_batch_plan(batch_id, options={"quality": "best"})  # as a manifest would
        await put_async(processor_settings, f"{batch_id}/second.jpg", image_bytes(seed=2))

        async def waiting() -> Any:
            snapshot = await repository.batch_snapshot(batch_id)
            pending = [i for i in snapshot.images if i.name == "second.jpg"] if snapshot else []
            return pending if pending and pending[0].level == "best" else None

        [second] = await eventually(waiting, what="the second image to wait at best")
        assert second.state is ImageState.PENDING and second.attempts == 0
        assert await queue_depth(processor_settings, "best") == 1
        assert worker.router._batches[batch_id].options["quality"] == "best"  # remembered as it is now
    first = (await repository.batch_snapshot(batch_id)).images[0]
    assert first.state is ImageState.COMPLETED and first.level == "fast"
