"""The worker: the engine, the pipeline, the consumers, the reconciler and the health server, wired
together once at start-up and taken apart in order at shutdown.

Start-up loads the engine for ``PROCESSOR_QUALITIES`` (failing with the missing weight file named),
connects to RabbitMQ with ``connect_robust``, declares the topology and the processor's queues,
and starts consuming. :meth:`Worker.run` serves until SIGTERM/SIGINT (see :mod:`processor.shutdown`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aio_pika
from aio_pika.abc import AbstractRobustConnection

from db.connection import Database
from db.repository import Repository
from db.workers import WorkerRegistry
from photoenhance.contracts.levels import pick_level
from photoenhance.contracts.options import Quality
from photoenhance.settings import Settings
from processor.admission import Admission
from processor.consumer import Consumer, SharedWindow
from processor.deadletters import DeadLetterWatch
from processor.engine.records import gains_from_batching
from processor.engine.version import ENGINE_VERSION
from processor.engine_service.client import RemoteEngine
from processor.handler import MessageHandler, Settle
from processor.health import HealthServer, create_app
from processor.heartbeat import Heartbeat
from processor.metrics import ProcessorMetrics
from processor.microbatch import MicroBatcher
from processor.pipeline import ImagePipeline
from processor.publisher import Publisher
from processor.queues import declare_processor_queues
from processor.reconciler import Reconciler
from processor.routing import Router
from processor.self_timing import time_levels
from processor.shutdown import ShutdownSignals
from processor.speeds import SpeedMeter
from processor.storage import Storage

__all__ = ["Worker", "new_worker_id"]

log = logging.getLogger(__name__)


def new_worker_id() -> str:
    """``host-pid-random``: unique per process, readable in leases and reports."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def served_qualities(settings: Settings) -> list[Quality]:
    """The quality levels this worker loads (``PROCESSOR_QUALITIES``)."""
    return [Quality(q) for q in settings.processor_qualities]


class Worker:
    """One processor worker. ``engine`` may be given (tests share one); otherwise it is loaded."""

    def __init__(self, settings: Settings, *, engine: Any = None, worker_id: str | None = None) -> None:
        self.settings = settings
        self.worker_id = worker_id or new_worker_id()
        self.metrics = ProcessorMetrics(max_batch=settings.microbatch_max_images)
        self._engine = engine
        self._owns_engine = engine is None
        self._stopping = False
        self._started = False
        self._connection: AbstractRobustConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._work: list[Consumer] = []
        self.health: HealthServer | None = None
        self.speeds = SpeedMeter()
        self._heartbeat: Heartbeat | None = None

    async def start(self) -> None:
        """Load, connect, declare and start consuming."""
        if self._engine is None:
            self._engine = await self._load_engine()
        settings = self.settings
        self._executor = ThreadPoolExecutor(settings.processor_io_threads, thread_name_prefix="photoenhance-io")
        self._db = Database(settings.database_url, busy_timeout_ms=settings.database_busy_timeout_ms)
        repository = Repository(self._db)
        storage = Storage(settings, self._executor)
        self._connection = await aio_pika.connect_robust(
            settings.amqp_url, client_properties={"connection_name": f"photoenhance-processor {self.worker_id}"}
        )
        # One channel for every level this worker serves. RabbitMQ 3.10 refuses a channel-wide
        # (global) prefetch on quorum queues, so each level's consumer gets the whole window and
        # a semaphore keeps the worker's own in-flight work within PREFETCH across them.
        work_channel = await self._connection.channel()
        await work_channel.set_qos(prefetch_count=settings.prefetch)
        queues = await declare_processor_queues(work_channel, settings)
        dead_channel = await self._connection.channel()
        await dead_channel.set_qos(prefetch_count=1)
        watch_queue = (await declare_processor_queues(dead_channel, settings)).dead_letter_watch
        publisher = Publisher(await self._connection.channel(publisher_confirms=True), settings)

        self._batcher = MicroBatcher(
            self._engine.enhance_batch_async,
            max_images=settings.microbatch_max_images,
            window_ms=settings.microbatch_window_ms,
            on_batch=self.metrics.batch_size.observe,
            wants_company=gains_from_batching,
        )
        # An engine process batches the images of every worker feeding it: each image goes there
        # as soon as it is decoded, without a window of its own here.
        enhance = self._engine.enhance if isinstance(self._engine, RemoteEngine) else self._batcher.submit
        self.pipeline = ImagePipeline(
            settings=settings,
            worker_id=self.worker_id,
            repository=repository,
            storage=storage,
            publisher=publisher,
            enhance=enhance,
            executor=self._executor,
            metrics=self.metrics,
            admission=Admission.for_worker(settings, self._executor, str(getattr(self._engine, "device", "cpu")),
                                           engine_here=not isinstance(self._engine, RemoteEngine)),
            speeds=self.speeds,
        )
        self.registry = WorkerRegistry(self._db, gone_after_s=settings.worker_gone_after_s)
        self.reconciler = Reconciler(
            settings, repository, storage, publisher, served_levels=self.registry.served_levels,
            on_pass=lambda report: self.metrics.set_waiting(report.waiting_by_level),
        )
        self.pipeline.batches.default_level = self._default_level
        self.router = Router(self.pipeline)
        window = SharedWindow(settings.prefetch)

        def handler(settle: Settle | None = None) -> MessageHandler:
            return MessageHandler(
                self.pipeline, batches=self.pipeline.batches, publisher=publisher, metrics=self.metrics, settle=settle
            )

        self._work = [
            Consumer(queues.topology.level_queues[level], window.wrap(handler()), f"work-{level}")
            for level in settings.processor_qualities
        ]
        if settings.processor_routes:
            route_channel = await self._connection.channel()
            await route_channel.set_qos(prefetch_count=settings.prefetch)
            announcements = await route_channel.get_queue(settings.amqp_work_queue)
            # In the shared window too: the router processes objects of its own levels itself.
            self._work.append(Consumer(announcements, window.wrap(handler(self.router.route)), "route"))
        dead_letters = DeadLetterWatch(
            settings.amqp_dead_letter_exchange,
            repository=repository,
            batches=self.pipeline.batches,
            publisher=publisher,
            metrics=self.metrics,
        )
        self._dead = Consumer(watch_queue, dead_letters, "dead-letter-watch")
        self._heartbeat = Heartbeat(
            self.registry,
            self.worker_id,
            levels=settings.processor_qualities,
            device=str(getattr(self._engine, "device", settings.device)),
            engine_version=ENGINE_VERSION,
            speeds=self.speeds.snapshot,
            interval_s=settings.worker_beat_s,
        )
        if settings.worker_self_timing:
            # Before the first beat, so the worker's row carries a speed for each level from the start.
            await time_levels(self._engine, settings.processor_qualities, self.speeds)
        await self._heartbeat.start()
        self.health = HealthServer(create_app(self.metrics, self.status), settings.processor_host, settings.processor_port)
        await self.health.start()
        for consumer in self._work:
            await consumer.start()
        await self._dead.start()
        if settings.reconcile_interval_s > 0:
            self._tasks.append(
                asyncio.create_task(self.reconciler.run_forever(settings.reconcile_interval_s), name="reconciler")
            )
        self._started = True
        log.info(
            "worker %s consuming the queues of %s%s (prefetch %d), health on %s:%d",
            self.worker_id, ",".join(settings.processor_qualities),
            f" and routing {settings.amqp_work_queue}" if settings.processor_routes else "", settings.prefetch,
            settings.processor_host, self.health.port,
        )

    async def _load_engine(self) -> Any:
        """The engine process at ``ENGINE_SOCKET`` (whose levels this worker then serves), or the
        models loaded here for ``PROCESSOR_QUALITIES``."""
        settings = self.settings
        if settings.engine_socket:
            engine = await RemoteEngine.connect(settings.engine_socket, max_output_pixels=settings.max_output_pixels,
                                                wait_s=settings.engine_wait_s)
            levels = tuple(q.value for q in Quality if q in engine.qualities)
            if set(levels) != set(settings.processor_qualities):
                log.info("serving the engine process's levels %s (PROCESSOR_QUALITIES: %s)",
                         ",".join(levels), ",".join(settings.processor_qualities))
            self.settings = settings.replace(processor_qualities=levels)
            return engine
        from processor.engine import Engine  # only when a worker really starts (torch with a network level)

        return Engine.load(settings, qualities=served_qualities(settings))

    async def _default_level(self) -> str:
        """``DEFAULT_QUALITY`` for a batch created now (``auto``: the best level served)."""
        served = await self.registry.served_levels(self.settings.fleet_levels)
        level, why = pick_level(self.settings.default_quality, served)
        log.info("new direct batch at %s: %s", level.value, why)
        return level.value

    def status(self) -> dict[str, Any]:
        """What ``/healthz`` reports."""
        connected = self._connection is not None and self._connection.connected.is_set()
        state = "stopping" if self._stopping else "starting" if not self._started else (
            "consuming" if connected else "reconnecting"
        )
        return {
            "ok": state == "consuming",
            "state": state,
            "worker": self.worker_id,
            "levels": list(self.settings.processor_qualities),
            "in_flight": sum(c.in_flight for c in self._work) if self._started else 0,
        }

    async def stop(self, hurry: asyncio.Event | None = None) -> None:
        """Stop consuming, let in-flight work finish within ``SHUTDOWN_GRACE_S``, close everything."""
        if self._stopping:
            return
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        if self._started:
            for consumer in self._work:
                await consumer.stop()
            await self._dead.stop()
            await asyncio.gather(*(c.drain(self.settings.shutdown_grace_s, hurry) for c in self._work))
            await self._dead.drain(min(5.0, self.settings.shutdown_grace_s), hurry)
            await self._batcher.close()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._heartbeat is not None:
            await self._heartbeat.stop()
        if self._connection is not None:
            await self._connection.close()
        if self.health is not None:
            await self.health.close()
        if self._started:
            self._executor.shutdown(wait=True)
            await self._db.dispose()
        if self._owns_engine and self._engine is not None:
            self._engine.close()
        log.info("worker %s stopped", self.worker_id)

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT, then shut down gracefully."""
        signals = ShutdownSignals()
        signals.install()
        try:
            await self.start()
            await signals.requested.wait()
        finally:
            await self.stop(signals.hurry)
            signals.uninstall()
