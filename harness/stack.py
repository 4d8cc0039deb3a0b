"""The whole pipeline as real child processes: ingest, notifier and a processor, for end-to-end tests.

``start_stack`` (per test) is a factory: ``await start_stack()`` starts ``photoenhance ingest``,
``photoenhance notifier`` and ``photoenhance processor`` (``fast`` quality only, see
:func:`harness.processor.tune`) with the test's settings (``Settings.to_env``) on free ports,
over the test's migrated database, its fresh buckets (with the CORS rule the web page needs) and
its AMQP names. ``processor=False`` leaves the worker out, for tests that want uploads to wait.
Every process is stopped afterwards.

:class:`Stack` can stop and start each service again on the same port, which is how tests make a
server go down or restart in the middle of a batch.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from db.connection import Database
from harness.processor import REPO, WAIT_S, WorkerProcess
from harness.services import free_port
from photoenhance.settings import Settings
from provision.cors import configure_upload_cors

__all__ = ["ServiceProcess", "Stack", "StartStack", "start_stack"]


class ServiceProcess:
    """``python -m photoenhance <service>`` as a child process on a fixed port, logging to a file."""

    def __init__(self, service: str, settings: Settings, port: int, log_path: Path) -> None:
        self.service = service
        self.settings = settings
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the service and wait until its ``/healthz`` answers 200."""
        env = {**os.environ, **self.settings.to_env(), "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "photoenhance", self.service, "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + WAIT_S
        while not self.healthy():
            if self.process.poll() is not None:
                raise AssertionError(f"{self.service} exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.service} not healthy after {WAIT_S} s:\n{self.log()}")
            time.sleep(0.1)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 30 s); the port is free afterwards."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""


@dataclass
class Stack:
    """A running pipeline: its settings (with the ports in use) and its processes."""

    settings: Settings
    ingest: ServiceProcess
    notifier: ServiceProcess
    log_dir: Path
    processor: WorkerProcess | None = None
    _workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def ingest_url(self) -> str:
        return self.ingest.url

    @property
    def notifier_url(self) -> str:
        return self.notifier.url

    @property
    def notifier_metrics_url(self) -> str:
        """The notifier's ``/metrics``, on its own port (NOTIFIER_METRICS_PORT)."""
        return f"http://127.0.0.1:{self.settings.notifier_metrics_port}/metrics"

    def start_processor(self) -> WorkerProcess:
        """Start a worker (one at a time) and wait until it is healthy."""
        assert self.processor is None or self.processor.process.poll() is not None, "a worker runs already"
        name = f"processor-{len(self._workers) + 1}"
        worker = WorkerProcess(self.settings, self.log_dir / f"{name}.log", name)
        self._workers.append(worker)
        self.processor = worker
        worker.wait_healthy()
        return worker

    def stop_processor(self) -> None:
        if self.processor is not None and self.processor.process.poll() is None:
            self.processor.terminate()

    def api(self, path: str, token: str | None = None) -> dict[str, Any]:
        """GET a JSON document from the ingest API (test-side checks)."""
        request = urllib.request.Request(self.ingest_url + path)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def logs(self) -> str:
        """Every service's log tail, for assertion messages."""
        parts = [f"--- ingest\n{self.ingest.log()}", f"--- notifier\n{self.notifier.log()}"]
        parts += [f"--- {w.worker_id}\n{w.log()}" for w in self._workers]
        return "\n".join(parts)

    def close(self) -> None:
        for worker in self._workers:
            worker.close()
        self.notifier.stop()
        self.ingest.stop()


StartStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def start_stack(
    processor_settings: Settings, database: Database, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[StartStack]:
    """A factory of running stacks over the test's store, broker and database (see module docstring)."""
    stacks: list[Stack] = []

    async def start(*, processor: bool = True, **changes: Any) -> Stack:
        settings = processor_settings.replace(
            ingest_port=free_port(),
            notifier_port=free_port(),
            notifier_metrics_port=free_port(),
            notifier_public_url="",
            **changes,
        )
        await asyncio.to_thread(configure_upload_cors, settings)
        log_dir = tmp_path_factory.mktemp("stack-logs")
        stack = Stack(
            settings=settings,
            ingest=ServiceProcess("ingest", settings, settings.ingest_port, log_dir / "ingest.log"),
            notifier=ServiceProcess("notifier", settings, settings.notifier_port, log_dir / "notifier.log"),
            log_dir=log_dir,
        )
        stacks.append(stack)
        await asyncio.gather(asyncio.to_thread(stack.ingest.start), asyncio.to_thread(stack.notifier.start))
        if processor:
            await asyncio.to_thread(stack.start_processor)
        return stack

    try:
        yield start
    finally:
        for stack in stacks:
            await asyncio.to_thread(stack.close)
