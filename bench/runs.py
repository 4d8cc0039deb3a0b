"""One measured batch through the running stack, and the retries radosgw's crashes call for.

:func:`measure` starts fresh workers, sends a warm-up batch, then the measured one
(:func:`run_batch`: create it through the API, subscribe over WebSocket, optionally bind the taps
and start the poller, upload, wait for ``batch.completed``), and returns a :class:`BatchRun`: every
moment of every image, for bench/report.py to turn into figures.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from PIL import Image

from bench.clients import (
    WAIT_S,
    CreatedBatch,
    Poller,
    UploadTimes,
    WebSocketSubscriber,
    create_batch,
    upload_all,
    with_presigned_puts,
)
from bench.procstats import phase_usage, sample
from bench.stack import BenchStack
from bench.taps import Taps, taps
from client.api import Api
from processor.timeline import MARKS

__all__ = ["BatchRun", "StoreCrashed", "UploadPlan", "make_images", "measure", "run_batch"]

#: Images in each warm-up batch (not measured).
WARM_UP_IMAGES = 6

#: Tries of one measured batch when radosgw dies under it (see StoreCrashed).
STORE_ATTEMPTS = 3

#: How often the wait for a batch checks that radosgw is still alive, seconds.
STORE_CHECK_S = 2.0


@dataclass(frozen=True)
class UploadPlan:
    """How the client uploads every batch."""

    #: Side of the square test pictures, pixels (the warm-up batch uses it too).
    size: int
    #: ``put`` (presigned PUTs) or ``post`` (the API's POST policies).
    method: str
    #: Uploads in flight at once.
    concurrency: int
    #: Upload starts per second; 0: as fast as they go.
    rate: float = 0


class StoreCrashed(RuntimeError):
    """radosgw died under a batch. Seen here with Ceph 16.2.15 (docs/BENCHMARKS.md): aborts and
    segfaults in its AMQP and request threads while concurrent uploads publish notifications."""


def make_images(count: int, size: int, seed: int) -> dict[str, bytes]:
    """``count`` distinct JPEGs of ``size``² (a gradient with noise, so the codec has real work)."""
    images = {}
    y, x = np.mgrid[0:size, 0:size]
    for i in range(count):
        rng = np.random.default_rng(seed + i)
        base = np.stack([x * 255 // (size - 1), y * 255 // (size - 1), (x + y + i * 7) % 256], -1)
        pixels = np.clip(base + rng.integers(-24, 24, base.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
        images[f"img{i:04d}.jpg"] = buffer.getvalue()
    return images


@dataclass
class BatchRun:
    """What one measured batch left behind."""

    files: dict[str, bytes]
    batch: CreatedBatch
    uploads: dict[str, UploadTimes]
    subscriber: WebSocketSubscriber
    poller: Poller | None
    taps: Taps | None
    #: Per-process CPU and memory over the batch (main run only).
    processes: dict[str, Any]
    wall_s: float

    def moments(self) -> dict[str, dict[str, float]]:
        """Every known moment of every image (see bench/stages.py), epoch seconds."""
        found: dict[str, dict[str, float]] = {}
        for name, up in self.uploads.items():
            m = {"put_started": up.started, "put_done": up.finished}
            if name in self.subscriber.images:
                arrived, event = self.subscriber.images[name]
                m["ws"] = arrived
                if event["type"] == "image.completed":
                    m["committed"] = _epoch(event["time"])
                    timeline = event["image"]["report"].get("timeline", {})
                    m.update({mark: _epoch(timeline[mark]) for mark in MARKS if mark in timeline})
            if self.taps is not None:
                for key, source in (("notified", self.taps.notified), ("published", self.taps.published)):
                    if name in source:
                        m[key] = source[name]
            if self.poller is not None and name in self.poller.learned:
                m["polled"] = self.poller.learned[name]
            found[name] = m
        return found

    def engine_compute_s(self) -> list[float]:
        """The engine's own time per completed image (its report's ``timings_ms``), seconds: what
        ``processing.enhance`` spends computing rather than waiting for the micro-batch window
        and the inference thread."""
        found = []
        for _, event in self.subscriber.images.values():
            timings = event["image"]["report"].get("timings_ms") if event["type"] == "image.completed" else None
            if timings:
                found.append(sum(timings.values()) / 1000)
        return found

    def outcome_counts(self) -> dict[str, int]:
        """How many images the WebSocket reported completed and failed."""
        types = [event["type"] for _, event in self.subscriber.images.values()]
        return {"completed": types.count("image.completed"), "failed": types.count("image.failed")}


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def warm_up(stack: BenchStack, session: aiohttp.ClientSession, plan: UploadPlan) -> None:
    """One small batch through the fresh workers, not measured."""
    files = make_images(WARM_UP_IMAGES, plan.size, seed=999_000)
    await run_batch(stack, session, files, UploadPlan(plan.size, plan.method, concurrency=4))


async def run_batch(
    stack: BenchStack,
    session: aiohttp.ClientSession,
    files: dict[str, bytes],
    plan: UploadPlan,
    *,
    poll_interval_s: float | None = None,
    tap: bool = False,
    options: dict[str, Any] | None = None,
) -> BatchRun:
    """Create a batch, subscribe, upload ``files`` as ``plan`` says and wait for ``batch.completed``
    over WebSocket; with ``poll_interval_s`` a poller runs beside it, with ``tap`` the taps.
    ``options``: the batch's options (default ``fast``, upscale 2)."""
    api = Api(session, stack.ingest_url)
    batch = await create_batch(api, files, options)
    if plan.method == "put":
        batch = with_presigned_puts(batch, stack.settings)
    subscriber = WebSocketSubscriber(batch.websocket_url)
    poller = Poller(api, batch.batch_id, batch.token, poll_interval_s) if poll_interval_s else None
    following = asyncio.create_task(subscriber.run(session))
    polling: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(subscriber.ready.wait(), 60)
        async with taps(stack.settings, batch.batch_id) if tap else nullcontext() as tapped:
            before = stack.samples() | {"bench-client": sample(os.getpid())}
            started = time.monotonic()
            polling = asyncio.create_task(poller.run()) if poller else None
            uploads = await _uploads(stack, session, batch, files, plan)
            await _finished(stack, [t for t in (following, polling) if t is not None], batch.batch_id)
            wall_s = time.monotonic() - started
            after = stack.samples() | {"bench-client": sample(os.getpid())}
            await asyncio.sleep(0.5)  # the taps' last copies may still be on their way to this process
    finally:
        for task in (following, polling):  # after a failure: no orphaned task left reading
            if task is not None and not task.done():
                task.cancel()
    if tapped is not None:
        tapped.resolve(batch.batch_id)
    if len(subscriber.images) < len(files):
        raise RuntimeError(
            f"the WebSocket stream ended (close code {subscriber.close_code}) after "
            f"{len(subscriber.images)} of {len(files)} images\n{stack.logs()}"
        )
    processes = {name: phase_usage(before.get(name), s, wall_s) for name, s in after.items()}
    return BatchRun(files, batch, uploads, subscriber, poller, tapped, processes, wall_s)


async def _uploads(
    stack: BenchStack, session: aiohttp.ClientSession, batch: CreatedBatch, files: dict[str, bytes], plan: UploadPlan
) -> dict[str, UploadTimes]:
    try:
        return await upload_all(session, batch, files, concurrency=plan.concurrency, rate=plan.rate)
    except Exception as exc:
        if not await asyncio.to_thread(stack.store_alive):
            raise StoreCrashed(f"radosgw died during the uploads: {exc}") from exc
        raise


async def _finished(stack: BenchStack, tasks: list[asyncio.Task[None]], batch_id: str) -> None:
    """Wait for the clients' tasks, checking now and then that radosgw has not died meanwhile
    (the workers would otherwise retry against a dead store until the wait's bound)."""
    deadline = time.monotonic() + WAIT_S
    pending = set(tasks)
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"batch {batch_id} did not finish within {WAIT_S} s\n{stack.logs()}")
        done, pending = await asyncio.wait(pending, timeout=STORE_CHECK_S)
        for task in done:
            task.result()  # a client's failure ends the run here
        if pending and not await asyncio.to_thread(stack.store_alive):
            raise StoreCrashed("radosgw died while the batch was being processed")


async def measure(
    stack: BenchStack,
    session: aiohttp.ClientSession,
    files: dict[str, bytes],
    plan: UploadPlan,
    *,
    workers: int,
    prefetch: int,
    label: str,
    crashes: list[dict[str, Any]],
    crash_logs: Path,
    **batch_options: Any,
) -> BatchRun:
    """Fresh workers, a warm-up batch, then the measured batch; again (up to STORE_ATTEMPTS times)
    with radosgw restarted when it died under the batch. Each crash is appended to ``crashes``, its
    logs kept in a ``radosgw-crash-<time>`` folder under ``crash_logs``."""
    for attempt in range(1, STORE_ATTEMPTS + 1):
        stack.start_workers(workers, prefetch)
        try:
            await warm_up(stack, session, plan)
            return await run_batch(stack, session, files, plan, **batch_options)
        except StoreCrashed as exc:
            stack.stop_workers()
            logs = crash_logs / f"radosgw-crash-{time.strftime('%Y%m%dT%H%M%S')}"
            crash_line = _first_line(stack.workdir / "ceph" / "log" / "rgw.a.out")
            crashes.append({"phase": label, "attempt": attempt, "what": str(exc), "radosgw": crash_line,
                            "logs": str(logs)})
            print(f"{label}: {exc} ({crash_line}); logs in {logs}", file=sys.stderr)
            if attempt == STORE_ATTEMPTS:
                raise
            await stack.restart_store(logs)
        finally:
            stack.stop_workers()
    raise AssertionError("unreachable")


def _first_line(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip().split("\n")[0]
    except OSError:
        return ""
