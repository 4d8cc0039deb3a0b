"""The worker as an operator sees it: start-up without weights, quality levels it does not serve,
/healthz and /metrics, SIGTERM with a bounded grace, options from manifests and metadata, and two
inputs that map to one result key."""

from __future__ import annotations

import asyncio
import collections
import io
import json
import subprocess
import sys
import urllib.request

import pytest
from PIL import Image

from db.repository import Repository
from harness.processor import (
    REPO,
    AnnouncementTap,
    WorkerProcess,
    batch_completed,
    eventually,
    image_bytes,
    output_keys,
    put_async,
    running_worker,
)
from photoenhance.contracts.keys import MANIFEST_NAME
from photoenhance.contracts.states import ImageState
from photoenhance.s3 import minio_client
from photoenhance.settings import Settings

FAST = {"photoenhance-quality": "fast"}


def test_missing_weights_stop_start_up_naming_the_file(settings: Settings) -> None:
    env = {**settings.to_env(), "PROCESSOR_QUALITIES": "fast,best", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "photoenhance", "processor"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 3, result.stderr
    assert "cannot start the engine" in result.stderr
    assert str(settings.weights_dir) in result.stderr and ".pth" in result.stderr


async def final_images(repository: Repository, batch_id: str, n: int):
    snapshot = await repository.batch_snapshot(batch_id)
    done = [i for i in snapshot.images if i.state.is_final] if snapshot else []
    return done if len(done) >= n else None


@pytest.mark.objectstore
async def test_an_image_asking_for_a_level_no_worker_serves_waits_instead_of_failing(
    processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    async with running_worker(processor_settings, fast_engine):
        await put_async(processor_settings, "levels/a.jpg", image_bytes(), {"photoenhance-quality": "best"})
        await put_async(processor_settings, "levels/b.jpg", image_bytes(seed=1), FAST)
        [done] = await eventually(lambda: final_images(repository, "levels", 1))
        snapshot = await repository.batch_snapshot("levels")
    waiting = next(i for i in snapshot.images if i.name == "a.jpg")
    assert done.name == "b.jpg" and done.state is ImageState.COMPLETED
    assert waiting.state is ImageState.PENDING and waiting.level == "best" and waiting.code is None


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _value(metrics: str, line_start: str) -> float:
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(line_start))


@pytest.mark.objectstore
async def test_healthz_and_metrics(processor_settings: Settings, repository: Repository, fast_engine) -> None:
    port = processor_settings.processor_port
    async with running_worker(processor_settings, fast_engine):
        status, body = await asyncio.to_thread(_get, port, "/healthz")
        assert status == 200 and json.loads(body)["state"] == "consuming"
        for i in range(3):
            await put_async(processor_settings, f"metrics/{i}.jpg", image_bytes(seed=i), FAST)
        await put_async(processor_settings, "metrics/bad.jpg", b"not an image", FAST)
        await eventually(lambda: final_images(repository, "metrics", 4))
        status, text = await asyncio.to_thread(_get, port, "/metrics")
    assert status == 200
    assert _value(text, "photoenhance_images_processed_total") == 3
    assert _value(text, 'photoenhance_images_failed_total{code="not_an_image"}') == 1
    assert _value(text, "photoenhance_in_flight") == 0
    assert _value(text, "photoenhance_microbatch_size_sum") == 3  # the undecodable one never reached the engine
    assert _value(text, "photoenhance_upload_to_result_seconds_count") == 3
    for step in ("fetch", "decode", "enhance", "encode", "store", "commit", "publish"):
        assert _value(text, f'photoenhance_step_seconds_count{{step="{step}"}}') >= 3, step
    with pytest.raises(OSError):  # stopped: nothing listens any more
        await asyncio.to_thread(_get, port, "/healthz")


@pytest.mark.objectstore
@pytest.mark.reliability
async def test_sigterm_stops_cleanly_and_leaves_unfinished_work_for_redelivery(
    processor_settings: Settings, repository: Repository, worker_processes
) -> None:
    """SHUTDOWN_GRACE_S=0: whatever is in flight at SIGTERM is cut off, handed back and redelivered."""
    batch_id, count = "sigterm", 12
    settings = processor_settings.replace(shutdown_grace_s=0, prefetch=8)
    first: WorkerProcess = worker_processes(settings, "first")
    first.wait_healthy()
    manifest = json.dumps({"expected_count": count, "options": {"quality": "fast"}}).encode()
    keys = [f"{batch_id}/img-{i:02d}.jpg" for i in range(count)]
    async with AnnouncementTap(settings) as tap:
        await put_async(settings, f"{batch_id}/{MANIFEST_NAME}", manifest)
        for i, key in enumerate(keys):
            await put_async(settings, key, image_bytes(256, 192, seed=i))
        await tap.announced(*keys)  # all on the work queue
    await eventually(lambda: repository.get_batch(batch_id), what="the first worker to take the batch")
    assert first.terminate() == 0, first.log()
    assert "stopped" in first.log()
    snapshot = await repository.batch_snapshot(batch_id)
    assert not [i for i in snapshot.images if i.state is ImageState.PROCESSING], "claims were handed back"

    second = worker_processes(settings, "second")
    second.wait_healthy()
    batch = await batch_completed(repository, batch_id)
    assert (batch.completed, batch.failed) == (count, 0)
    events = await repository.events_since(batch_id)
    per_name = collections.Counter(e.image.name for e in events if e.image is not None)
    assert set(per_name.values()) == {1}
    assert second.terminate() == 0


@pytest.mark.objectstore
async def test_a_claim_whose_answer_the_shutdown_cut_off_is_handed_back(
    processor_settings: Settings, repository: Repository, fast_engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim committed, but the grace ran out before its answer reached the image's task: the
    image must still go back to pending (not wait out a lease), and the message back to the queue."""
    settings = processor_settings.replace(shutdown_grace_s=0)
    claimed = asyncio.Event()
    async with running_worker(settings, fast_engine) as worker:
        # The claim is taken by the one transaction before the work (register, claim, reserve).
        claim = worker.pipeline.repository.start_image

        async def claim_then_stall(*args, **kwargs):
            result = await claim(*args, **kwargs)
            claimed.set()
            await asyncio.sleep(3600)  # the answer is still on its way when the shutdown comes
            return result

        monkeypatch.setattr(worker.pipeline.repository, "start_image", claim_then_stall)
        await put_async(settings, "cut/a.jpg", image_bytes(), FAST)
        await asyncio.wait_for(claimed.wait(), 60)
    snapshot = await repository.batch_snapshot("cut")
    assert snapshot is not None
    [image] = snapshot.images
    assert (image.state, image.lease_owner) == (ImageState.PENDING, None)


def test_a_delivery_after_the_consumer_stopped_starts_no_work() -> None:
    """Deliveries the broker sent before it took the cancel in are left unacknowledged (they go
    back when the channel closes): a task started for them would escape the shutdown's drain.

    A stand-in queue and message: a real broker cannot be made to deliver in that instant on demand.
    """
    from processor.consumer import Consumer

    class Queue:
        async def cancel(self, tag: str) -> None:
            pass

    class Message:
        delivery_tag = 1

    handled: list[object] = []

    async def handler(message: object) -> None:
        handled.append(message)

    async def scenario() -> int:
        consumer = Consumer(Queue(), handler, "work")  # type: ignore[arg-type]
        consumer._tag = "ctag"  # as after start()
        await consumer.stop()
        await consumer._dispatch(Message())  # type: ignore[arg-type]
        await asyncio.sleep(0)
        return consumer.in_flight

    assert asyncio.run(scenario()) == 0
    assert handled == []


@pytest.mark.objectstore
async def test_manifest_options_and_metadata_overrides(
    processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    batch_id = "planned"
    manifest = {"expected_count": 2, "options": {"quality": "fast", "upscale": 1, "output_format": "png"}}
    async with running_worker(processor_settings, fast_engine):
        await put_async(processor_settings, f"{batch_id}/{MANIFEST_NAME}", json.dumps(manifest).encode())
        await put_async(processor_settings, f"{batch_id}/plain.jpg", image_bytes(64, 48))
        await put_async(processor_settings, f"{batch_id}/bigger.jpg", image_bytes(64, 48), {"photoenhance-upscale": "3"})
        batch = await batch_completed(repository, batch_id)
    assert batch.source == "direct" and batch.expected_count == 2
    client = minio_client(processor_settings)
    sizes = {}
    for key in output_keys(processor_settings, f"{batch_id}/"):
        data = client.get_object(processor_settings.s3_output_bucket, key).read()
        with Image.open(io.BytesIO(data)) as img:
            sizes[key] = (img.format, img.size)
    assert sizes == {f"{batch_id}/plain.png": ("PNG", (64, 48)), f"{batch_id}/bigger.png": ("PNG", (192, 144))}


@pytest.mark.objectstore
async def test_two_inputs_for_one_result_key_get_two_results(
    processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    batch_id = "clash"
    # Both as JPEG: under the default output format (auto) a.png stays a.png and nothing clashes.
    as_jpeg = {**FAST, "photoenhance-output-format": "jpeg"}
    async with running_worker(processor_settings, fast_engine):
        await put_async(processor_settings, f"{batch_id}/a.png", image_bytes(fmt="PNG", seed=1), as_jpeg)
        await put_async(processor_settings, f"{batch_id}/a.jpg", image_bytes(seed=2), as_jpeg)
        images = await eventually(lambda: final_images(repository, batch_id, 2))
    assert [i.state for i in images] == [ImageState.COMPLETED] * 2
    keys = {i.name: i.output_key for i in images}
    # whichever claimed first keeps the contract's key; the other keeps its own name plus ".jpg"
    assert len(set(keys.values())) == 2
    for name, key in keys.items():
        assert key in {f"{batch_id}/a.jpg", f"{batch_id}/{name}.jpg"}
    assert output_keys(processor_settings, f"{batch_id}/") == sorted(keys.values())
