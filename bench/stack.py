"""The real pipeline on this machine, private to one benchmark run.

What :func:`bench_stack` brings up, in a temporary folder, and takes down again:

- a throw-away Ceph RGW (``infra/ceph/up.sh``) on free ports, whose bucket notifications go to the
  local RabbitMQ (``AMQP_URL``, default ``amqp://guest:guest@127.0.0.1:5672/``);
- exchange, queue and routing-key names of its own (``bench<hex>.*``) and a fresh database: an
  SQLite file (default), or with ``database="postgresql"`` a new database on the local PostgreSQL
  (``BENCH_POSTGRES_URL``, a user that may create databases), dropped afterwards;
- what ``photoenhance init`` prepares (:func:`provision.bootstrap.bootstrap`): topology, migrations,
  buckets, the RGW topic and bucket notification, CORS;
- ``photoenhance ingest`` and ``photoenhance notifier`` as child processes on free ports;
- ``photoenhance processor`` workers at the ``fast`` level, started and stopped per measured
  configuration by :meth:`BenchStack.start_workers` / :meth:`BenchStack.stop_workers`.

The process handling is the test suite's, imported rather than copied: ``ceph_cluster``
(harness/objectstore.py), ``ServiceProcess`` (harness/stack.py), ``WorkerProcess``
and ``delete_queues`` (harness/processor.py), ``delete_amqp_names``
(harness/services.py). Those modules import pytest, so the benchmark needs the ``test``
extra installed.

The workers keep the production defaults except: ``PROCESSOR_QUALITIES=fast``, ``DEVICE=cpu``,
and the in-worker reconciler off (``RECONCILE_INTERVAL_S=0``): it is a safety net for lost
notifications, and while a backlog older than ``RECONCILE_GRACE_S`` waits in the queue it would
announce those objects a second time.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika

from bench.procstats import ProcSample, sample
from harness.objectstore import CephCluster, ceph_cluster
from harness.processor import WorkerProcess, delete_queues
from harness.services import asyncpg_url, delete_amqp_names, free_port, postgres_ddl
from harness.stack import ServiceProcess
from photoenhance.settings import Settings
from processor.queues import processor_queue_names
from provision.bootstrap import bootstrap

__all__ = ["BenchStack", "bench_stack"]

#: The local RabbitMQ, unless AMQP_URL names another.
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"

#: Where a PostgreSQL user that may create databases is found (``--database postgresql``).
POSTGRES_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@dataclass
class BenchStack:
    """A running pipeline: settings with its ports and names, and its processes."""

    settings: Settings
    workdir: Path
    ceph: CephCluster
    ingest: ServiceProcess
    notifier: ServiceProcess
    workers: list[WorkerProcess] = field(default_factory=list)
    _started_workers: int = 0

    @property
    def ingest_url(self) -> str:
        return self.ingest.url

    def start_workers(self, count: int, prefetch: int) -> None:
        """Start ``count`` processor processes with ``PREFETCH=prefetch``; wait until each consumes."""
        assert not self.workers, "stop the running workers first"
        for _ in range(count):
            self._started_workers += 1
            name = f"processor-{self._started_workers}"
            settings = self.settings.replace(prefetch=prefetch, processor_port=free_port())
            self.workers.append(WorkerProcess(settings, self.workdir / f"{name}.log", name))
        for worker in self.workers:
            worker.wait_healthy(timeout=300)  # torch's first import on a busy 2-core machine is slow

    def stop_workers(self) -> None:
        """SIGTERM every worker and wait for it (SIGKILL if it does not stop within a minute)."""
        for worker in self.workers:
            try:
                worker.terminate(timeout=60)
            finally:
                worker.close()
        self.workers = []

    async def restart_store(self, keep_logs_in: Path) -> None:
        """After radosgw died: keep its logs, start it again, and empty the work queue (the workers
        must be stopped) so that nothing of the interrupted batch is processed during the next one."""
        keep_logs(self.workdir, keep_logs_in)
        await asyncio.to_thread(self.ceph.start)
        connection = await aio_pika.connect(self.settings.amqp_url)
        try:
            queue = await (await connection.channel()).get_queue(self.settings.amqp_work_queue)
            await queue.purge()
        finally:
            await connection.close()

    def store_alive(self) -> bool:
        """Whether radosgw still answers."""
        return self.ceph.is_running()

    def pids(self) -> dict[str, int]:
        """Every process of the pipeline that this run started, by name."""
        found = {
            "ingest": self.ingest.process.pid if self.ingest.process else 0,
            "notifier": self.notifier.process.pid if self.notifier.process else 0,
        }
        found.update({w.worker_id: w.process.pid for w in self.workers})
        pid_file = self.ceph.base / "pids"  # written by infra/ceph/up.sh: "name pid" per line
        if pid_file.exists():
            for line in pid_file.read_text().split("\n"):
                name, _, pid = line.partition(" ")
                if pid.strip().isdigit():
                    found[{"rgw.a": "radosgw", "osd.0": "ceph-osd", "mon.a": "ceph-mon"}.get(name, name)] = int(pid)
        return {name: pid for name, pid in found.items() if pid}

    def samples(self) -> dict[str, ProcSample]:
        """A /proc reading of every process of :meth:`pids` that is alive."""
        taken = {name: sample(pid) for name, pid in self.pids().items()}
        return {name: s for name, s in taken.items() if s is not None}

    def logs(self) -> str:
        """Every service's log tail, for error messages."""
        parts = [f"--- ingest\n{self.ingest.log()}", f"--- notifier\n{self.notifier.log()}"]
        parts += [f"--- {w.worker_id}\n{w.log()}" for w in self.workers]
        return "\n".join(parts)


#: Suffix of each name a run owns, after its ``bench<hex>`` tag: nothing is shared with other runs,
#: the tests or a local deployment on the same broker.
RUN_NAME_SUFFIXES = {
    "amqp_events_exchange": ".s3-events",
    "amqp_events_routing_key": "-uploads",  # also the RGW topic's name
    "amqp_work_queue": ".work",
    "amqp_dead_letter_exchange": ".dead-letter",
    "amqp_progress_exchange": ".progress",
    "s3_input_bucket": "-in",
    "s3_output_bucket": "-out",
}


def bench_settings(tag: str, workdir: Path, endpoint: str, database_url: str) -> Settings:
    """Settings naming this run's own exchanges, queues, buckets, database and ports."""
    own_names = {setting: f"{tag}{suffix}" for setting, suffix in RUN_NAME_SUFFIXES.items()}
    return Settings.from_env(
        environ={},
        **own_names,
        amqp_url=os.environ.get("AMQP_URL", DEFAULT_AMQP_URL),
        database_url=database_url,
        s3_provider="ceph",
        s3_endpoint=endpoint,
        processor_qualities=("fast",),
        device="cpu",
        reconcile_interval_s=0,
        ingest_port=free_port(),
        notifier_port=free_port(),
        notifier_metrics_port=free_port(),  # its default, 8083, may be another notifier's
        notifier_public_url="",
        weights_dir=workdir / "weights",
        # A benchmark creates batches from one address faster than any person would: the public
        # quotas (batches per hour, open batches) measure nothing here, so they are off.
        quota_public_batches_per_hour=0,
        quota_public_open_batches=0,
        quota_public_files_per_day=0,
        quota_public_bytes_per_day=0,
    )


def keep_logs(workdir: Path, into: Path) -> None:
    """Copy every log of the run (services, workers, Ceph daemons) into ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    for log in [*workdir.glob("*.log"), *(workdir / "ceph" / "log").glob("*")]:
        if log.is_file():
            shutil.copy2(log, into / log.name)


@asynccontextmanager
async def bench_stack(failure_logs: Path | None = None, database: str = "sqlite") -> AsyncIterator[BenchStack]:
    """Store, broker names, database, ingest and notifier, running (no workers yet); removed after,
    in reverse order, whatever part of it was up.

    When the block fails, the logs are copied into ``failure_logs`` (if given) before the
    temporary folder goes."""
    tag = f"bench{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="pe-bench-") as tmp:  # short: Ceph's socket paths are limited
        workdir = Path(tmp)
        async with AsyncExitStack() as cleanup:
            ceph = await cleanup.enter_async_context(ceph_cluster(workdir / "ceph"))
            if database == "postgresql":
                await postgres_ddl(POSTGRES_ADMIN_URL, f'CREATE DATABASE "{tag}"')
                cleanup.push_async_callback(
                    postgres_ddl, POSTGRES_ADMIN_URL, f'DROP DATABASE IF EXISTS "{tag}" WITH (FORCE)'
                )
                database_url = asyncpg_url(POSTGRES_ADMIN_URL, tag)
            else:
                database_url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
            settings = bench_settings(tag, workdir, ceph.endpoint, database_url)
            cleanup.push_async_callback(delete_amqp_names, settings)
            cleanup.push_async_callback(delete_queues, settings, processor_queue_names(settings))
            await bootstrap(settings)
            stack = BenchStack(
                settings=settings,
                workdir=workdir,
                ceph=ceph,
                ingest=ServiceProcess("ingest", settings, settings.ingest_port, workdir / "ingest.log"),
                notifier=ServiceProcess("notifier", settings, settings.notifier_port, workdir / "notifier.log"),
            )
            cleanup.push_async_callback(asyncio.to_thread, stack.ingest.stop)
            cleanup.push_async_callback(asyncio.to_thread, stack.notifier.stop)
            cleanup.push_async_callback(asyncio.to_thread, stack.stop_workers)
            try:
                await asyncio.gather(asyncio.to_thread(stack.ingest.start), asyncio.to_thread(stack.notifier.start))
                yield stack
            except BaseException:
                if failure_logs is not None:
                    keep_logs(workdir, failure_logs)
                raise
