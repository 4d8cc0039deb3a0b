"""Uploading a batch and the check every reliability test ends with: nothing lost, nothing doubled,
every image in a final state.

:func:`upload_batch` puts a ``_batch.json`` manifest (expected count, ``fast`` quality) and then the
images into the input bucket, several at a time, and returns each name's eTag.

:func:`assert_exactly_once` waits for the batch to complete and then checks, against the database
and the output bucket, that:

- the batch is completed and its counters are exact: total = completed = number of inputs, no failure;
- its progress events have gapless sequence numbers 1..n (n = the batch's ``last_seq``), with
  exactly one final event (``image.completed``) per input, their completed counters counting 1..n
  in order, and one ``batch.completed``, last;
- every image is completed, for the very version (eTag) that was uploaded;
- the output bucket holds exactly one result per input under the contract's key, nothing else, and
  each result's ``photoenhance-source-etag`` names the uploaded version;
- with a :class:`~harness.processor.ProgressRecorder`, that every event in the database was
  also published on the progress exchange (re-publications allowed, told apart by ``seq``), the
  same event under each number: a subscriber misses nothing.
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor

from db.records import BatchRecord
from db.repository import Repository
from harness.processor import (
    WAIT_S,
    ProgressRecorder,
    WorkerProcess,
    batch_completed,
    eventually,
    image_bytes,
    output_keys,
    put,
)
from photoenhance.contracts.keys import MANIFEST_NAME, output_key
from photoenhance.contracts.progress import EventType, ProgressEvent
from photoenhance.contracts.states import ImageState
from photoenhance.s3 import minio_client
from photoenhance.settings import Settings

__all__ = [
    "assert_exactly_once",
    "assert_recorded_once",
    "completed_at_least",
    "completed_count",
    "image_name",
    "metric",
    "metric_at_least",
    "upload_batch",
]

#: Uploads running at once: 4 outrun any worker here, like a client script with a thread pool.
#: (They once crashed radosgw 16.2.15 mid-soak; the cause was the topic's broker ack, see
#: provision/notifications.py, not the concurrency.)
UPLOAD_THREADS = 4


def image_name(i: int) -> str:
    """The name of the ``i``-th image of a test batch."""
    return f"img-{i:04d}.jpg"


async def upload_batch(
    settings: Settings,
    batch_id: str,
    count: int,
    *,
    size: tuple[int, int] = (64, 48),
    threads: int = UPLOAD_THREADS,
    pause_s: float = 0.0,
) -> dict[str, str]:
    """Put the manifest, then ``count`` small JPEGs under ``batch_id/``; returns {name: eTag}.

    ``pause_s`` spaces the uploads out (one thread then), for tests that need the batch to be
    arriving while a fault happens.
    """
    manifest = {"expected_count": count, "options": {"quality": "fast", "upscale": 2}}
    client = minio_client(settings)
    bucket = settings.s3_input_bucket

    def one(i: int) -> tuple[str, str]:
        name = image_name(i)
        return name, put(client, bucket, f"{batch_id}/{name}", image_bytes(*size, seed=i))

    await asyncio.to_thread(
        put, client, bucket, f"{batch_id}/{MANIFEST_NAME}", json.dumps(manifest).encode(), None, "application/json"
    )
    if pause_s > 0:
        etags = {}
        for i in range(count):
            name, etag = await asyncio.to_thread(one, i)
            etags[name] = etag
            await asyncio.sleep(pause_s)
        return etags

    def all_of_them() -> dict[str, str]:
        with ThreadPoolExecutor(threads, thread_name_prefix="upload") as pool:
            return dict(pool.map(one, range(count)))

    return await asyncio.to_thread(all_of_them)


async def completed_count(repository: Repository, batch_id: str) -> int:
    """The batch's completed counter (0 before the batch exists)."""
    batch = await repository.get_batch(batch_id)
    return 0 if batch is None else batch.completed


async def completed_at_least(repository: Repository, batch_id: str, n: int) -> bool:
    """Whether at least ``n`` images of the batch are completed (for :func:`eventually`)."""
    return await completed_count(repository, batch_id) >= n


async def assert_recorded_once(
    repository: Repository, batch_id: str, names: Iterable[str], *, timeout: float = WAIT_S
) -> tuple[BatchRecord, list[ProgressEvent]]:
    """The database half of the check: wait for ``batch_id`` to complete, then assert its counters
    are exact for ``names`` (all completed, none failed) and its events gapless, with one
    ``image.completed`` per name counting 1..n and one ``batch.completed``, last. Returns the batch
    and its events."""
    expected = set(names)
    count = len(expected)
    batch = await batch_completed(repository, batch_id, timeout)
    assert (batch.total, batch.completed, batch.failed) == (count, count, 0), (
        f"counters total/completed/failed {(batch.total, batch.completed, batch.failed)}, expected {count} completed"
    )

    events = await repository.events_since(batch_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), "sequence numbers must be gapless"
    assert batch.last_seq == len(events), "the batch's last_seq names its last event"
    finals = [e for e in events if e.type in (EventType.IMAGE_COMPLETED, EventType.IMAGE_FAILED)]
    per_name = collections.Counter(_name(e) for e in finals)
    assert per_name == {name: 1 for name in expected}, (
        "exactly one final event per image; doubled: "
        f"{sorted(n for n, c in per_name.items() if c > 1)[:10]}, missing: {sorted(expected - set(per_name))[:10]}"
    )
    assert all(e.type is EventType.IMAGE_COMPLETED for e in finals), "no image failed"
    # Each completion moved the counter by exactly one, in sequence order.
    assert [e.counts.completed for e in finals] == list(range(1, count + 1))
    assert [e.type for e in events].count(EventType.BATCH_COMPLETED) == 1
    assert events[-1].type is EventType.BATCH_COMPLETED, "batch.completed comes last"
    return batch, events


async def assert_exactly_once(
    repository: Repository,
    settings: Settings,
    batch_id: str,
    sources: Mapping[str, str],
    *,
    recorder: ProgressRecorder | None = None,
    timeout: float = WAIT_S,
) -> BatchRecord:
    """Wait for ``batch_id`` to complete, then assert each of ``sources`` ({name: eTag}) was
    processed exactly once, and with ``recorder`` published (see the module docstring); returns
    the completed batch."""
    batch, events = await assert_recorded_once(repository, batch_id, sources, timeout=timeout)

    snapshot = await repository.batch_snapshot(batch_id)
    assert snapshot is not None
    images = {i.name: i for i in snapshot.images}
    assert set(images) == set(sources)
    for name, image in images.items():
        assert image.state is ImageState.COMPLETED, (name, image.state, image.reason)
        assert image.etag == sources[name], f"{name}: the uploaded version was processed"
        assert image.output_key == output_key(batch_id, name, "jpeg"), (name, image.output_key)

    expected_keys = sorted(output_key(batch_id, name, "jpeg") for name in sources)
    assert output_keys(settings, f"{batch_id}/") == expected_keys, "exactly one result object per input"
    assert await asyncio.to_thread(_source_etags, settings, expected_keys) == {
        output_key(batch_id, name, "jpeg"): etag for name, etag in sources.items()
    }, "every result was made from the uploaded version"

    if recorder is not None:
        async def all_published() -> bool:
            return len(recorder.distinct(batch_id)) >= len(events)

        await eventually(all_published, timeout, f"every event of {batch_id} on the progress exchange")
        published = recorder.distinct(batch_id)
        assert sorted(published) == [e.seq for e in events], "no event published beyond the database's"
        assert [(published[e.seq].type, _name(published[e.seq])) for e in events] == [
            (e.type, _name(e)) for e in events
        ], "each sequence number was published with the event the database holds"
    return batch


def _name(event: ProgressEvent) -> str | None:
    return event.image.name if event.image is not None else None


def _source_etags(settings: Settings, keys: list[str]) -> dict[str, str | None]:
    """Each result object's ``photoenhance-source-etag`` metadata."""
    client = minio_client(settings)

    def one(key: str) -> tuple[str, str | None]:
        stat = client.stat_object(settings.s3_output_bucket, key)
        meta = {k.lower(): v for k, v in (stat.metadata or {}).items()}
        return key, meta.get("x-amz-meta-photoenhance-source-etag")

    with ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="stat") as pool:
        return dict(pool.map(one, keys))


async def metric_at_least(worker: WorkerProcess, n: float, name: str, **labels: str) -> bool:
    """Whether the worker's metric ``name`` (with ``labels``) has reached ``n`` (for :func:`eventually`)."""
    text = await asyncio.to_thread(worker.metrics)
    return metric(text, name, **labels) >= n


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus sample ``name`` in ``text`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        sample, _, label_text = head.partition("{")
        if sample != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total
