"""Bad input reaches a final state with a reason (or the dead-letter queue), and the worker goes on.

Each case is uploaded with a plain S3 client into the real store (or, for message bodies, published
where the store publishes), handled by a running worker, and followed by a good image that must
still complete.
"""

from __future__ import annotations

import asyncio
import struct
import zlib

import aio_pika
import boto3
import pytest
from botocore.config import Config

from db.repository import Repository
from harness.processor import (
    eventually,
    image_bytes,
    output_keys,
    put_async,
    running_worker,
)
from photoenhance.contracts.states import ImageState
from photoenhance.settings import Settings

pytestmark = pytest.mark.objectstore

FAST = {"photoenhance-quality": "fast"}


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` with almost no data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def corrupt_jpeg() -> bytes:
    good = image_bytes(64, 48, seed=3)
    return good[: len(good) // 3] + b"\x00" * 50  # header intact, entropy data cut and zeroed


CASES = {
    "corrupt-jpeg": ("photo.jpg", corrupt_jpeg(), "corrupt_image"),
    "zero-bytes": ("empty.jpg", b"", "not_an_image"),
    "text-named-jpg": ("letter.jpg", b"Dear reader,\nthis is not a picture.\n", "not_an_image"),
    "png-30000x30000": ("huge.png", png_claiming(30000, 30000), "too_many_pixels"),
    "non-image-key": ("notes.txt", b"name,size\nphoto.jpg,10\n", "not_an_image"),
}


async def image_state(repository: Repository, batch_id: str, name: str):
    snapshot = await repository.batch_snapshot(batch_id)
    if snapshot is None:
        return None
    found = [i for i in snapshot.images if i.name == name and i.state.is_final]
    return found[0] if found else None


async def check_worker_goes_on(settings: Settings, repository: Repository, batch_id: str) -> None:
    await put_async(settings, f"{batch_id}/after.jpg", image_bytes(seed=9), FAST)
    after = await eventually(lambda: image_state(repository, batch_id, "after.jpg"), what="the next image")
    assert after.state is ImageState.COMPLETED


@pytest.mark.parametrize("case", sorted(CASES))
async def test_bad_object_fails_with_a_reason(
    case: str, processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    name, data, code = CASES[case]
    batch_id = f"bad-{case}"
    async with running_worker(processor_settings, fast_engine) as worker:
        await put_async(processor_settings, f"{batch_id}/{name}", data, FAST)
        image = await eventually(lambda: image_state(repository, batch_id, name), what=f"{name} to be final")
        assert image.state is ImageState.FAILED
        assert image.code == code and image.reason
        assert image.attempts == 1, "a permanent error is not retried"
        await check_worker_goes_on(processor_settings, repository, batch_id)
        assert worker.status()["ok"]
    events = await repository.events_since(batch_id)
    failed = [e for e in events if e.image is not None and e.image.name == name]
    assert len(failed) == 1 and failed[0].image.code == code and failed[0].image.reason == image.reason
    assert output_keys(processor_settings, f"{batch_id}/") == [f"{batch_id}/after.jpg"]


@pytest.mark.parametrize("name", ["with space.jpg", "plus+sign.jpg", "ünï 日本.jpg", "deep/er/x%20y.jpg"])
async def test_odd_but_valid_names_complete(
    name: str, processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    batch_id = "odd-names"
    async with running_worker(processor_settings, fast_engine):
        await put_async(processor_settings, f"{batch_id}/{name}", image_bytes(seed=1), FAST)
        image = await eventually(lambda: image_state(repository, batch_id, name), what=f"{name!r} to be final")
    assert image.state is ImageState.COMPLETED, image.reason
    assert image.key == f"{batch_id}/{name}"
    assert output_keys(processor_settings, f"{batch_id}/") == [image.output_key]


@pytest.mark.parametrize("name", ["sub/../../x.jpg", "../y.jpg", "./z.jpg", "/w.jpg"])
async def test_key_escaping_its_prefix_is_refused_with_a_reason(
    name: str, processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    # minio-py refuses such keys client-side; boto3 sends them verbatim and RGW stores them so.
    batch_id = "escape"
    key = f"{batch_id}/{name}"
    s3 = boto3.client(
        "s3",
        endpoint_url=processor_settings.s3_endpoint,
        aws_access_key_id=processor_settings.s3_access_key,
        aws_secret_access_key=processor_settings.s3_secret_key,
        region_name=processor_settings.s3_region,
        config=Config(s3={"addressing_style": "path"}),
    )
    async with running_worker(processor_settings, fast_engine):
        await asyncio.to_thread(s3.put_object, Bucket=processor_settings.s3_input_bucket, Key=key, Body=image_bytes())
        image = await eventually(lambda: _any_final(repository, batch_id), what="the refused key to be recorded")
        assert image.state is ImageState.FAILED and image.code == "invalid_key"
        assert image.key == key and image.reason.startswith("the key is refused: ") and "segments" in image.reason
        await check_worker_goes_on(processor_settings, repository, batch_id)
    assert output_keys(processor_settings) == [f"{batch_id}/after.jpg"]


async def _any_final(repository: Repository, batch_id: str):
    snapshot = await repository.batch_snapshot(batch_id)
    return next((i for i in snapshot.images if i.state.is_final), None) if snapshot else None


@pytest.mark.parametrize(
    "body",
    [b"this is not JSON", b'{"Records": "nope"}', b"[1, 2, 3]", b'{"Records": [{"eventName": "s3:ObjectCreated:Put"}]}'],
    ids=["not-json", "records-not-a-list", "json-array", "record-without-s3"],
)
async def test_malformed_bodies_go_to_the_dead_letter_queue(
    body: bytes, processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    async with running_worker(processor_settings, fast_engine) as worker:
        await worker.pipeline.publisher.announce(body)
        dead = await eventually(lambda: _dead_letters(processor_settings), what="the dead letter")
        assert dead == [body]
        await check_worker_goes_on(processor_settings, repository, "after-malformed")
        assert worker.status()["ok"]


@pytest.mark.parametrize("key", ["at-the-root.jpg", "not a batch!/x.jpg"])
async def test_an_object_outside_any_batch_goes_to_the_dead_letter_queue(
    key: str, processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    async with running_worker(processor_settings, fast_engine):
        await put_async(processor_settings, key, image_bytes(), FAST)
        [dead] = await eventually(lambda: _dead_letters(processor_settings), what="the dead letter")
        assert key.encode() in dead
        assert await repository.open_batches() == []


async def _dead_letters(settings: Settings) -> list[bytes]:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(settings.amqp_dead_letter_exchange)
        bodies = []
        while (message := await queue.get(fail=False, no_ack=False)) is not None:
            bodies.append(message.body)
        return bodies  # unacknowledged: they go back when the channel closes
    finally:
        await connection.close()


async def test_an_unusable_manifest_goes_to_the_dead_letter_queue(
    processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    async with running_worker(processor_settings, fast_engine) as worker:
        await put_async(processor_settings, "manifested/_batch.json", b'{"expected_count": "thirty"}')
        [dead] = await eventually(lambda: _dead_letters(processor_settings), what="the dead letter")
        assert b"_batch.json" in dead
        assert (await repository.get_batch("manifested")).expected_count is None
        assert worker.metrics.messages.labels("dead_lettered")._value.get() == 1
        await check_worker_goes_on(processor_settings, repository, "manifested")
