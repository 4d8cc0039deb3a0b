"""Notifier benchmark and demonstration: ordering, resume, replicas, and fan-out latency.

Runs real notifier processes (``python -m photoenhance notifier``) against the local RabbitMQ and a
fresh database (PostgreSQL by default), with real WebSocket and SSE clients in this process.
Progress comes from one of two drivers (``--driver``):

- ``processor`` (default): the whole pipeline. A throw-away Ceph RGW (``ceph_cluster`` of
  harness/objectstore.py, as bench/stack.py starts it) is prepared by ``photoenhance init``'s
  bootstrap; ``--workers`` real ``photoenhance processor`` processes serve the ``fast`` level; the
  batch is created as the ingest API creates it (token, expected count) and its images are PUT
  into the input bucket; the store's notifications reach the processors, which commit each result
  and publish its events.
- ``repository``: no store and no processor. Each image is claimed and completed through the
  repository (its events get their sequence numbers in that transaction) and the returned events
  are published after the commit, exactly as the processor publishes them.

Scenarios (``--scenario``, default ``all``):

- ``order``: one subscriber connected before any image finishes gets one event per image in
  sequence order, then ``batch.completed`` and ``end``.
- ``resume``: a subscriber disconnects half-way, more images finish while it is away, it reconnects
  with ``since``: it must get exactly the missed events, none twice.
- ``replicas``: two notifier processes with clients on each (WebSocket and SSE): every client must
  get every event.
- ``fanout``: ``--clients`` WebSocket clients (500) on one batch of ``--images`` (100): all must get
  all events; latency from the event's ``time`` (stamped inside the committing transaction) to the
  moment the client's read returns, p50/p90/p99/max.

Prints one JSON document, then a short table. Latency includes the client side: all clients share
this process's event loop, so a message waits behind the others' reads; the machine's 2 cores are
shared by the notifier, the clients, the driver, RabbitMQ and the database.

    .venv/bin/python bench/notifier.py                       # everything, real processor, PostgreSQL
    .venv/bin/python bench/notifier.py --driver repository --scenario fanout --rate 10
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from db.connection import Database  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from db.records import ImageVersion  # noqa: E402
from db.repository import Repository  # noqa: E402
from harness.objectstore import ceph_cluster  # noqa: E402
from harness.services import delete_amqp_names, free_port, postgres_ddl  # noqa: E402
from photoenhance.contracts.options import EnhanceOptions, Quality  # noqa: E402
from photoenhance.contracts.progress import progress_routing_key  # noqa: E402
from photoenhance.contracts.tokens import new_batch_token  # noqa: E402
from photoenhance.s3 import minio_client  # noqa: E402
from photoenhance.settings import Settings  # noqa: E402
from photoenhance.topology import declare_progress_exchange  # noqa: E402
from provision.bootstrap import bootstrap  # noqa: E402

#: Where a PostgreSQL user that may create databases is found.
POSTGRES_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

#: Upper bound on any wait here; exceeding it is reported as a failure, not a figure.
WAIT_S = 600


# -- environment -----------------------------------------------------------------------------


@dataclass
class Environment:
    """Settings with unique AMQP names, a fresh database, and for the processor driver a store."""

    settings: Settings
    repository: Repository
    workdir: Path


@asynccontextmanager
async def environment(driver: str, database: str, workdir: Path) -> AsyncIterator[Environment]:
    """Everything the run needs, removed afterwards."""
    tag = f"bench{uuid.uuid4().hex[:8]}"
    if database == "postgresql":
        db_name = f"pe_{tag}"
        await _postgres(f'CREATE DATABASE "{db_name}"')
        url = POSTGRES_ADMIN_URL.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + f"/{db_name}"
    else:
        db_name = ""
        url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    settings = Settings.from_env(
        environ={},
        amqp_url=os.environ.get("AMQP_URL", Settings().amqp_url),
        amqp_events_exchange=f"{tag}.s3-events",
        amqp_events_routing_key=f"{tag}-uploads",
        amqp_work_queue=f"{tag}.work",
        amqp_dead_letter_exchange=f"{tag}.dead-letter",
        amqp_progress_exchange=f"{tag}.progress",
        database_url=url,
        processor_qualities=("fast",),
        device="cpu",
    )
    db = Database(url)
    try:
        async with AsyncExitStack() as stack:
            if driver == "processor":
                cluster = await stack.enter_async_context(ceph_cluster(workdir / "ceph"))
                settings = settings.replace(
                    s3_provider="ceph", s3_endpoint=cluster.endpoint, s3_input_bucket=f"{tag}-in", s3_output_bucket=f"{tag}-out"
                )
                # What `photoenhance init` does: topology, migrations, buckets, bucket notifications.
                await bootstrap(settings)
            else:
                await upgrade(db)
            yield Environment(settings, Repository(db), workdir)
    finally:
        await db.dispose()
        await _delete_amqp_names(settings)
        if db_name:
            await _postgres(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


async def _postgres(statement: str) -> None:
    await postgres_ddl(POSTGRES_ADMIN_URL, statement)


async def _delete_amqp_names(settings: Settings) -> None:
    from processor.queues import processor_queue_names

    await delete_amqp_names(settings, queues=processor_queue_names(settings))


@dataclass
class NotifierProcess:
    """A notifier child process and where it listens."""

    process: asyncio.subprocess.Process
    base_url: str
    log_path: Path

    def cpu_seconds(self) -> float:
        """User + system CPU the process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@asynccontextmanager
async def notifier_process(settings: Settings, workdir: Path, name: str) -> AsyncIterator[NotifierProcess]:
    """``python -m photoenhance notifier`` on a free port, stopped with SIGTERM afterwards."""
    log_path = workdir / f"{name}.log"
    # The metrics port too is a free one: its default (8083) is taken by the second replica, or by
    # a notifier that already runs on this machine.
    env = {
        **os.environ, **settings.to_env(),
        "NOTIFIER_HOST": "127.0.0.1", "NOTIFIER_PORT": "0", "NOTIFIER_METRICS_PORT": str(free_port()),
    }
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "photoenhance", "notifier", env=env, cwd=ROOT, stderr=log
        )
    try:
        base_url = await _listening_url(process, log_path)
        yield NotifierProcess(process, base_url, log_path)
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 60)


async def _listening_url(process: asyncio.subprocess.Process, log_path: Path) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"listening on (http://[\d.]+:\d+)", log_path.read_text(errors="replace"))
        if found:
            return found.group(1)
        if process.returncode is not None:
            break
        await asyncio.sleep(0.05)
    raise RuntimeError(f"notifier did not start:\n{log_path.read_text(errors='replace')}")


# -- drivers: where progress comes from ----------------------------------------------------------


@dataclass
class Batch:
    batch_id: str
    token: str
    count: int
    #: Image ids (repository driver only).
    image_ids: list[int] = field(default_factory=list)


async def create_batch(repository: Repository, settings: Settings, count: int) -> Batch:
    """A batch as the ingest API creates it: fast options, expected count, a token."""
    batch_id = f"bench-{uuid.uuid4().hex[:10]}"
    token, token_hash = new_batch_token()
    await repository.create_batch(
        batch_id,
        input_bucket=settings.s3_input_bucket,
        options=EnhanceOptions(quality=Quality.FAST, upscale=2).to_dict(),
        expected_count=count,
        token_hash=token_hash,
    )
    return Batch(batch_id, token, count)


async def paced(indexes: range, rate: float) -> AsyncIterator[int]:
    """Yield ``indexes`` at ``rate`` per second (0: at once)."""
    start = time.monotonic()
    for n, index in enumerate(indexes):
        if rate > 0:
            await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
        yield index


class RepositoryDriver:
    """Completes images through the repository and publishes their events after each commit."""

    description = "repository: claim + complete_image, events published after each commit as the processor does"

    def __init__(self, env: Environment, rate: float) -> None:
        self.env = env
        self.rate = rate
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None

    async def __aenter__(self) -> RepositoryDriver:
        self._connection = await aio_pika.connect(self.env.settings.amqp_url)
        channel = await self._connection.channel()
        self._exchange = await declare_progress_exchange(channel, self.env.settings)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def prepare(self, count: int) -> Batch:
        """A batch with ``count`` registered, pending images."""
        batch = await create_batch(self.env.repository, self.env.settings, count)
        for i in range(count):
            name = f"img{i:03d}.jpg"
            version = ImageVersion(
                bucket=self.env.settings.s3_input_bucket, batch_id=batch.batch_id, key=f"{batch.batch_id}/{name}",
                name=name, etag=f"e{i}", size=1000, uploaded_at=datetime.now(UTC),
            )
            batch.image_ids.append((await self.env.repository.register_image(version)).image.id)
        return batch

    async def complete(self, batch: Batch, indexes: range) -> None:
        """Finish those images; returns once each is committed and published."""
        assert self._exchange is not None
        repository = self.env.repository
        async for i in paced(indexes, self.rate):
            image_id = batch.image_ids[i]
            claimed = await repository.claim_image(image_id, "bench-worker", lease_seconds=60)
            assert claimed is not None
            events = await repository.complete_image(
                image_id, "bench-worker", output_key=f"out/{claimed.name}", report={"faces": 0}
            )
            for event in events:
                await self._exchange.publish(
                    aio_pika.Message(event.to_json(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=progress_routing_key(event.batch_id),
                )


class ProcessorDriver:
    """Uploads images into the store; real processor processes turn them into results and events."""

    #: Uploads in flight at once.
    UPLOAD_CONCURRENCY = 8

    def __init__(self, env: Environment, rate: float, workers: int) -> None:
        self.env = env
        self.rate = rate
        self.workers = workers
        self.description = f"processor: {workers} x `photoenhance processor` (fast), PUTs into Ceph RGW"
        self._processes: list[asyncio.subprocess.Process] = []
        self._uploaded: dict[str, int] = {}

    async def __aenter__(self) -> ProcessorDriver:
        for n in range(self.workers):
            port = free_port()
            env = {**os.environ, **self.env.settings.replace(processor_port=port).to_env()}
            with (self.env.workdir / f"processor-{n}.log").open("wb") as log:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "photoenhance", "processor", "--worker-id", f"bench-{n}",
                    env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                )
            self._processes.append(process)
            await self._healthy(process, port, n)
        return self

    async def _healthy(self, process: asyncio.subprocess.Process, port: int, n: int) -> None:
        deadline = time.monotonic() + 300
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if process.returncode is not None:
                    break
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        log = (self.env.workdir / f"processor-{n}.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"processor {n} did not become healthy:\n{log}")

    async def __aexit__(self, *exc: object) -> None:
        for process in self._processes:
            if process.returncode is None:
                process.terminate()
        for process in self._processes:
            await asyncio.wait_for(process.wait(), 120)

    async def prepare(self, count: int) -> Batch:
        """A batch as the ingest API makes it; its images arrive by upload."""
        return await create_batch(self.env.repository, self.env.settings, count)

    async def complete(self, batch: Batch, indexes: range) -> None:
        """Upload those images; returns once the processors have committed each one."""
        client = minio_client(self.env.settings)
        limit = asyncio.Semaphore(self.UPLOAD_CONCURRENCY)

        async def upload(i: int) -> None:
            data = picture(i)
            async with limit:
                await asyncio.to_thread(
                    client.put_object, self.env.settings.s3_input_bucket, f"{batch.batch_id}/img{i:03d}.jpg",
                    io.BytesIO(data), len(data), content_type="image/jpeg",
                )

        uploads = [asyncio.create_task(upload(i)) async for i in paced(indexes, self.rate)]
        await asyncio.gather(*uploads)
        self._uploaded[batch.batch_id] = self._uploaded.get(batch.batch_id, 0) + len(indexes)
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            record = await self.env.repository.get_batch(batch.batch_id)
            if record is not None and record.completed + record.failed >= self._uploaded[batch.batch_id]:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"batch {batch.batch_id}: processors did not finish what was uploaded")


def picture(seed: int, width: int = 96, height: int = 64) -> bytes:
    """A small JPEG (a gradient with some noise, so the encoder has work)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x + y + seed * 7) % 256], -1)
    pixels = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


Driver = RepositoryDriver | ProcessorDriver


# -- clients ----------------------------------------------------------------------------------


@dataclass
class Subscriber:
    """What one client received: (seq, type, event time, receipt time) per event."""

    events: list[tuple[int, str, float, float]] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    close_code: int | None = None
    first_message: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def seqs(self) -> list[int]:
        return [e[0] for e in self.events]


def _url(base: str, transport: str, batch: Batch, since: int | None = None) -> str:
    path = "ws/batches" if transport == "ws" else "events/batches"
    url = f"{base}/{path}/{batch.batch_id}?token={batch.token}"
    if transport == "ws":
        url = url.replace("http://", "ws://", 1)
    return url if since is None else f"{url}&since={since}"


def _record(subscriber: Subscriber, text: str, received_at: float) -> None:
    message = json.loads(text)
    kind = message["kind"]
    if kind != "heartbeat":
        subscriber.kinds.append(kind)
    if kind == "event":
        sent_at = datetime.fromisoformat(message["time"].replace("Z", "+00:00")).timestamp()
        subscriber.events.append((message["seq"], message["type"], sent_at, received_at))
    subscriber.first_message.set()


async def follow_ws(
    session: aiohttp.ClientSession, url: str, subscriber: Subscriber, stop_after: int | None = None
) -> Subscriber:
    """Read a WebSocket stream until the server closes it, or until ``stop_after`` events."""
    async with session.ws_connect(url, heartbeat=None, max_msg_size=0) as ws:
        while True:
            msg = await ws.receive()
            received_at = time.time()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            _record(subscriber, msg.data, received_at)
            if stop_after is not None and len(subscriber.events) >= stop_after:
                await ws.close()
                break
    subscriber.close_code = ws.close_code
    return subscriber


async def follow_sse(session: aiohttp.ClientSession, url: str, subscriber: Subscriber) -> Subscriber:
    """Read an SSE stream until the server ends it."""
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=None, sock_read=WAIT_S)) as resp:
        resp.raise_for_status()
        async for raw in resp.content:
            line = raw.decode()
            if line.startswith("data: "):
                _record(subscriber, line[6:], time.time())
    return subscriber


async def start_clients(
    follow: Callable[..., Awaitable[Subscriber]], session: aiohttp.ClientSession, urls: list[str]
) -> tuple[list[Subscriber], list[asyncio.Task[Subscriber]]]:
    """Connect every client and wait until each has its first message (so each is bound)."""
    subscribers = [Subscriber() for _ in urls]
    tasks = [asyncio.create_task(follow(session, url, sub)) for url, sub in zip(urls, subscribers)]
    await asyncio.wait_for(asyncio.gather(*(s.first_message.wait() for s in subscribers)), WAIT_S)
    return subscribers, tasks


def complete_and_ordered(subscriber: Subscriber, expected_last: int, first: int = 1) -> bool:
    """Exactly ``first..expected_last`` in order, the last one ``batch.completed``, then ``end``."""
    return (
        subscriber.seqs == list(range(first, expected_last + 1))
        and bool(subscriber.events)
        and subscriber.events[-1][1] == "batch.completed"
        and subscriber.kinds[-1:] == ["end"]
    )


def _summary(kinds: list[str]) -> str:
    """``snapshot, 21 x event, end`` for a list of message kinds."""
    runs: list[list[Any]] = []
    for kind in kinds:
        if runs and runs[-1][0] == kind:
            runs[-1][1] += 1
        else:
            runs.append([kind, 1])
    return ", ".join(kind if n == 1 else f"{n} x {kind}" for kind, n in runs)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# -- scenarios --------------------------------------------------------------------------------


async def scenario_order(env: Environment, driver: Driver, args: argparse.Namespace) -> dict:
    images = min(args.images, 20)
    batch = await driver.prepare(images)
    async with notifier_process(env.settings, env.workdir, "order") as notifier, aiohttp.ClientSession() as session:
        (sub,), (task,) = await start_clients(follow_ws, session, [_url(notifier.base_url, "ws", batch)])
        await driver.complete(batch, range(images))
        await asyncio.wait_for(task, WAIT_S)
    return {
        "images": images,
        "messages": _summary(sub.kinds),
        "seqs": f"{sub.seqs[0]}..{sub.seqs[-1]}" if sub.seqs else "",
        "seqs_strictly_consecutive": sub.seqs == list(range(1, len(sub.seqs) + 1)),
        "last_type": sub.events[-1][1] if sub.events else None,
        "close_code": sub.close_code,
        "ok": sub.kinds[0] == "snapshot" and complete_and_ordered(sub, images + 1) and sub.close_code == 1000,
    }


async def scenario_resume(env: Environment, driver: Driver, args: argparse.Namespace) -> dict:
    images = min(args.images, 40)
    batch = await driver.prepare(images)
    half, away = images // 2, images // 4
    async with (
        notifier_process(env.settings, env.workdir, "resume") as notifier,
        aiohttp.ClientSession() as session,
    ):
        first = Subscriber()
        first_task = asyncio.create_task(
            follow_ws(session, _url(notifier.base_url, "ws", batch), first, stop_after=half)
        )
        await asyncio.wait_for(first.first_message.wait(), WAIT_S)
        await driver.complete(batch, range(half))
        await asyncio.wait_for(first_task, WAIT_S)
        # Away: these finish (committed and published) while this subscriber is gone.
        await driver.complete(batch, range(half, half + away))
        since = first.seqs[-1]
        (second,), (second_task,) = await start_clients(
            follow_ws, session, [_url(notifier.base_url, "ws", batch, since=since)]
        )
        await driver.complete(batch, range(half + away, images))
        await asyncio.wait_for(second_task, WAIT_S)
    total = images + 1
    duplicates = len(second.seqs) - len(set(second.seqs)) + len(set(first.seqs) & set(second.seqs))
    return {
        "images": images,
        "first_connection_seqs": f"{first.seqs[0]}..{first.seqs[-1]}" if first.seqs else "",
        "disconnected_after_seq": since,
        "finished_while_away": away,
        "second_connection_seqs": f"{second.seqs[0]}..{second.seqs[-1]}" if second.seqs else "",
        "missed": sorted(set(range(1, total + 1)) - set(first.seqs) - set(second.seqs)),
        "duplicates": duplicates,
        "ok": first.seqs + second.seqs == list(range(1, total + 1)) and complete_and_ordered(second, total, since + 1),
    }


async def scenario_replicas(env: Environment, driver: Driver, args: argparse.Namespace) -> dict:
    images = min(args.images, 50)
    batch = await driver.prepare(images)
    per_replica_ws, per_replica_sse = 8, 2
    async with (
        notifier_process(env.settings, env.workdir, "replica-a") as a,
        notifier_process(env.settings, env.workdir, "replica-b") as b,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
    ):
        groups = []
        for replica in (a, b):
            ws = await start_clients(follow_ws, session, [_url(replica.base_url, "ws", batch)] * per_replica_ws)
            sse = await start_clients(follow_sse, session, [_url(replica.base_url, "sse", batch)] * per_replica_sse)
            groups.append((replica, ws, sse))
        await driver.complete(batch, range(images))
        report = {}
        for replica, (ws_subs, ws_tasks), (sse_subs, sse_tasks) in groups:
            await asyncio.wait_for(asyncio.gather(*ws_tasks, *sse_tasks), WAIT_S)
            report[replica.base_url] = {
                "ws_clients_complete": sum(complete_and_ordered(s, images + 1) for s in ws_subs),
                "ws_clients": len(ws_subs),
                "sse_clients_complete": sum(complete_and_ordered(s, images + 1) for s in sse_subs),
                "sse_clients": len(sse_subs),
            }
    ok = all(
        r["ws_clients_complete"] == r["ws_clients"] and r["sse_clients_complete"] == r["sse_clients"]
        for r in report.values()
    )
    return {"images": images, "replicas": report, "ok": ok}


async def scenario_fanout(env: Environment, driver: Driver, args: argparse.Namespace) -> dict:
    batch = await driver.prepare(args.images)
    async with (
        notifier_process(env.settings, env.workdir, "fanout") as notifier,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
    ):
        connect_start = time.monotonic()
        subs, tasks = await start_clients(follow_ws, session, [_url(notifier.base_url, "ws", batch)] * args.clients)
        connect_s = time.monotonic() - connect_start
        cpu_before = notifier.cpu_seconds()
        drive_start = time.monotonic()
        await driver.complete(batch, range(args.images))
        drive_s = time.monotonic() - drive_start
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)
        delivered_s = time.monotonic() - drive_start
        cpu_used = notifier.cpu_seconds() - cpu_before
    latencies_ms = [(received - sent) * 1000 for sub in subs for _, _, sent, received in sub.events]
    complete = sum(complete_and_ordered(s, args.images + 1) for s in subs)
    return {
        "clients": args.clients,
        "images": args.images,
        "events_per_client": args.images + 1,
        "rate_images_per_s": args.rate or "max",
        "clients_complete_in_order": complete,
        "deliveries": len(latencies_ms),
        "connect_all_s": round(connect_s, 2),
        "drive_s": round(drive_s, 2),
        "all_delivered_s": round(delivered_s, 2),
        "notifier_cpu_s": round(cpu_used, 2),
        "latency_ms": {
            "p50": round(percentile(latencies_ms, 50), 1),
            "p90": round(percentile(latencies_ms, 90), 1),
            "p99": round(percentile(latencies_ms, 99), 1),
            "max": round(max(latencies_ms), 1),
            "mean": round(statistics.fmean(latencies_ms), 1),
        },
        "ok": complete == args.clients,
    }


SCENARIOS: dict[str, Callable[[Environment, Driver, argparse.Namespace], Awaitable[dict]]] = {
    "order": scenario_order,
    "resume": scenario_resume,
    "replicas": scenario_replicas,
    "fanout": scenario_fanout,
}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    results: dict[str, Any] = {"database": args.database}
    with tempfile.TemporaryDirectory(prefix="bench-notifier-") as tmp:
        async with environment(args.driver, args.database, Path(tmp)) as env:
            driver: Driver = (
                ProcessorDriver(env, args.rate, args.workers)
                if args.driver == "processor"
                else RepositoryDriver(env, args.rate)
            )
            results["driver"] = driver.description
            async with driver:
                for name in names:
                    results[name] = await SCENARIOS[name](env, driver, args)
    return results


def table(results: dict[str, Any]) -> str:
    rows = ["| scenario | result | figures |", "|---|---|---|"]
    for name in SCENARIOS:
        if name not in results:
            continue
        r = results[name]
        if name == "order":
            figures = f"{r['messages']}; seqs {r['seqs']}, last {r['last_type']}"
        elif name == "resume":
            figures = (
                f"away after seq {r['disconnected_after_seq']}, {r['finished_while_away']} finished meanwhile; "
                f"missed {len(r['missed'])}, duplicates {r['duplicates']}"
            )
        elif name == "replicas":
            figures = "; ".join(
                f"{v['ws_clients_complete']}/{v['ws_clients']} ws + {v['sse_clients_complete']}/{v['sse_clients']} sse"
                for v in r["replicas"].values()
            )
        else:
            lat = r["latency_ms"]
            figures = (
                f"{r['clients_complete_in_order']}/{r['clients']} clients complete; "
                f"p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms"
            )
        rows.append(f"| {name} | {'ok' if r['ok'] else 'FAILED'} | {figures} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=["all", *SCENARIOS], default="all")
    parser.add_argument("--clients", type=int, default=500, help="WebSocket clients in the fanout scenario")
    parser.add_argument("--images", type=int, default=100, help="images in the fanout batch")
    parser.add_argument(
        "--rate", type=float, default=0, help="images uploaded (or completed) per second; 0: as fast as possible"
    )
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--driver", choices=["processor", "repository"], default="processor")
    parser.add_argument("--workers", type=int, default=1, help="processor processes (processor driver)")
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    text = json.dumps(results, indent=2)
    print(text)
    print()
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    return 0 if all(r["ok"] for r in results.values() if isinstance(r, dict)) else 1


if __name__ == "__main__":
    sys.exit(main())
