"""Machinery for the processor's tests: settings, workers (in-process and real subprocesses),
uploads, progress recording and waiting.

- ``processor_settings``: ``store_settings`` tuned for tests (``fast`` quality only, short leases,
  short back-offs, the in-worker reconciler off unless a test turns it on, a free health port);
  the processor's own queues are deleted afterwards.
- ``fast_engine`` (session): one ``fast`` engine shared by in-process workers (loading torch once).
- ``running_worker(settings, engine)``: an in-process :class:`processor.worker.Worker`.
- :class:`WorkerProcess`: ``python -m photoenhance processor`` with a test's settings
  (``Settings.to_env``), so ``kill -9`` and SIGTERM are real.
- :class:`ProgressRecorder`: a queue bound to the progress exchange, recording every event.
- :class:`AnnouncementTap`: a queue beside the work queue, to wait until uploads were announced.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import numpy as np
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractIncomingMessage
from minio import Minio
from PIL import Image

from db.repository import Repository
from harness.services import free_port
from photoenhance.contracts.events import parse_notification
from photoenhance.contracts.progress import ProgressEvent
from photoenhance.s3 import minio_client
from photoenhance.settings import Settings
from photoenhance.topology import declare_progress_exchange

REPO = Path(__file__).resolve().parents[1]

#: Upper bound for waiting on a pipeline outcome in a test (a bound, not a speed check).
WAIT_S = 120


def tune(settings: Settings, **changes: Any) -> Settings:
    """Test values for the processor's settings (``changes`` win)."""
    values: dict[str, Any] = dict(
        processor_qualities=("fast",),
        lease_seconds=6,
        retry_base_delay_ms=200,
        retry_max_delay_ms=2000,
        retry_max_attempts=4,
        reconcile_interval_s=0,
        reconcile_grace_s=0,
        batch_idle_seconds=2,
        shutdown_grace_s=10,
        processor_port=free_port(),
        processor_io_threads=4,
        microbatch_window_ms=20,
        device="cpu",
        # Seconds per start with the random-weight network levels; tests/processor/test_fleet.py
        # turns it on.
        worker_self_timing=False,
    )
    values.update(changes)
    return settings.replace(**values)


async def delete_queues(settings: Settings, names: list[str]) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        for name in names:
            channel = await connection.channel()
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.queue_delete(name)
    finally:
        await connection.close()


@pytest.fixture
def processor_settings(store_settings: Settings) -> Iterator[Settings]:
    """``store_settings`` tuned for processor tests; the processor's extra queues are removed after."""
    from processor.queues import processor_queue_names

    tuned = tune(store_settings)
    yield tuned
    asyncio.run(delete_queues(tuned, processor_queue_names(tuned)))


@pytest.fixture(scope="session")
def fast_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An engine serving ``fast`` only (no weight files), shared by the session's in-process workers."""
    from photoenhance.contracts.options import Quality
    from processor.engine import Engine

    engine = Engine.load(
        Settings(weights_dir=tmp_path_factory.mktemp("no-weights"), device="cpu"), qualities=[Quality.FAST]
    )
    yield engine
    engine.close()


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, engine: Any, worker_id: str | None = None) -> AsyncIterator[Any]:
    """An in-process worker, stopped gracefully at the end of the block."""
    from processor.worker import Worker

    worker = Worker(settings, engine=engine, worker_id=worker_id)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


class WorkerProcess:
    """``python -m photoenhance processor`` as a real child process, logging to a file."""

    def __init__(self, settings: Settings, log_path: Path, worker_id: str) -> None:
        self.settings = settings
        self.log_path = log_path
        self.worker_id = worker_id
        env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "photoenhance", "processor", "--worker-id", worker_id],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def health(self) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.settings.processor_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())
        except OSError:
            return None

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.settings.processor_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    def wait_healthy(self, timeout: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            status = self.health()
            if status is not None and status.get("ok"):
                return
            if self.process.poll() is not None:
                raise AssertionError(f"worker {self.worker_id} exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {self.worker_id} not healthy after {timeout} s:\n{self.log()}")
            time.sleep(0.2)

    def kill(self) -> None:
        """``kill -9``."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM and wait for the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        self._log.close()


@pytest.fixture
def worker_processes(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """A factory ``start(settings, name)`` of worker subprocesses; all are killed afterwards."""
    started: list[WorkerProcess] = []

    def start(settings: Settings, name: str) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"{name}.log", name)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()


# -- images and uploads ----------------------------------------------------------------------------
def image_bytes(width: int = 64, height: int = 48, seed: int = 0, fmt: str = "JPEG") -> bytes:
    """A small random-ish picture (a gradient plus noise, so JPEG has something to encode)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y + seed * 7) % 256], -1)
    pixels = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def put(client: Minio, bucket: str, key: str, data: bytes, metadata: dict[str, str] | None = None,
        content_type: str = "image/jpeg") -> str:
    """PUT with a plain S3 client; returns the eTag without quotes."""
    result = client.put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type,
                               metadata=metadata)
    return (result.etag or "").strip('"')


async def put_async(settings: Settings, key: str, data: bytes, metadata: dict[str, str] | None = None) -> str:
    return await asyncio.to_thread(put, minio_client(settings), settings.s3_input_bucket, key, data, metadata)


def output_keys(settings: Settings, prefix: str = "") -> list[str]:
    client = minio_client(settings)
    return sorted(o.object_name for o in client.list_objects(settings.s3_output_bucket, prefix=prefix, recursive=True))


# -- progress and waiting --------------------------------------------------------------------------
async def _tap(
    settings: Settings,
    exchange: Callable[[AbstractChannel], Awaitable[AbstractExchange]],
    routing_key: str,
    take: Callable[[bytes], None],
) -> AbstractConnection:
    """A private queue bound to one of the pipeline's exchanges, each message body handed to
    ``take``; the queue lives as long as the returned connection."""
    connection = await aio_pika.connect(settings.amqp_url)
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(await exchange(channel), routing_key=routing_key)

    async def on_message(message: AbstractIncomingMessage) -> None:
        take(message.body)
        await message.ack()

    await queue.consume(on_message)
    return connection


class ProgressRecorder:
    """Records every progress event published for any batch (a queue bound with ``batch.#``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.events: list[ProgressEvent] = []

    async def __aenter__(self) -> ProgressRecorder:
        self._connection = await _tap(
            self.settings,
            lambda channel: declare_progress_exchange(channel, self.settings),
            "batch.#",
            lambda body: self.events.append(ProgressEvent.from_json(body)),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._connection.close()

    def distinct(self, batch_id: str) -> dict[int, ProgressEvent]:
        """The batch's events by sequence number (re-published ones counted once)."""
        return {e.seq: e for e in self.events if e.batch_id == batch_id}


class AnnouncementTap:
    """Records the keys the object store announces (a queue of its own on the events exchange, with
    the work queue's routing key), so a test knows when an upload's event has reached the broker.

    A PUT's answer says nothing about that: RGW hands the event to its AMQP thread and answers
    (``amqp-ack-level=none``), and the event reaches the broker ~100 ms later. RabbitMQ routes a
    message to every bound queue at once, so once the tap has a key, the work queue has had its
    chance at it too (or, unbound, has missed it).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys: list[str] = []

    async def __aenter__(self) -> AnnouncementTap:
        self._connection = await _tap(
            self.settings,
            lambda channel: channel.get_exchange(self.settings.amqp_events_exchange),
            self.settings.amqp_events_routing_key,
            lambda body: self.keys.extend(record.key for record in parse_notification(body)),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._connection.close()

    async def announced(self, *keys: str, timeout: float = WAIT_S) -> None:
        """Wait until every one of ``keys`` has been announced."""

        async def all_seen() -> bool:
            return set(keys) <= set(self.keys)

        await eventually(all_seen, timeout, f"the announcement of {sorted(set(keys) - set(self.keys))}")


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = WAIT_S, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.2)


async def batch_completed(repository: Repository, batch_id: str, timeout: float = WAIT_S) -> Any:
    """Wait until the batch is completed; returns its record."""
    from photoenhance.contracts.states import BatchState

    async def check() -> Any:
        batch = await repository.get_batch(batch_id)
        return batch if batch is not None and batch.state is BatchState.COMPLETED else None

    return await eventually(check, timeout, f"batch {batch_id} to complete")


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident memory) of process ``pid``, in KiB, from /proc."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found
