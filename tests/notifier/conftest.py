"""Fixtures that run the notifier against the test's RabbitMQ and database."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from db.connection import Database
from db.repository import Repository
from notifier.app import create_app
from notifier.hub import Hub
from notifier.metrics import NotifierMetrics
from photoenhance.settings import Settings


@dataclass
class RunningNotifier:
    """A notifier app served in this process on a free port."""

    base_url: str
    settings: Settings
    hub: Hub
    metrics: NotifierMetrics
    runner: web.AppRunner

    def metric(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when it was never touched)."""
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


StartNotifier = Callable[..., Awaitable[RunningNotifier]]


@pytest.fixture
async def start_notifier(settings: Settings, database: Database) -> AsyncIterator[StartNotifier]:
    """Start notifier apps (each with its own hub and queue): settings overrides, ``hub_options``,
    another ``repository``."""
    runners: list[web.AppRunner] = []

    async def start(
        *, hub_options: dict[str, Any] | None = None, repository: Repository | None = None, **overrides: Any
    ) -> RunningNotifier:
        notifier_settings = settings.replace(**overrides)
        metrics = NotifierMetrics()
        hub = Hub(notifier_settings, metrics, **(hub_options or {}))
        app = create_app(
            notifier_settings, repository=repository or Repository(database), hub=hub, metrics=metrics
        )
        runner = web.AppRunner(app, shutdown_timeout=5)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return RunningNotifier(f"http://{host}:{port}", notifier_settings, hub, metrics, runner)

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def notifier(start_notifier: StartNotifier) -> RunningNotifier:
    """One notifier with the test's settings."""
    return await start_notifier()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for subscribers (no connection limit: tests open many at once)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session


@dataclass
class NotifierProcess:
    """``python -m photoenhance notifier`` running as a child process."""

    process: asyncio.subprocess.Process
    base_url: str
    log: list[str]
    #: The ``/metrics`` URL, on the notifier's separate metrics port.
    metrics_url: str


SpawnNotifier = Callable[..., Awaitable[NotifierProcess]]


@pytest.fixture
async def spawn_notifier(settings: Settings, database: Database) -> AsyncIterator[SpawnNotifier]:
    """Start notifier processes with the test's settings (port 0: each picks a free port)."""
    children: list[tuple[NotifierProcess, asyncio.Task[None]]] = []

    async def spawn() -> NotifierProcess:
        env = {
            **os.environ,
            **settings.to_env(),
            "NOTIFIER_HOST": "127.0.0.1",
            "NOTIFIER_PORT": "0",
            "NOTIFIER_METRICS_PORT": "0",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "photoenhance", "notifier", env=env, stderr=asyncio.subprocess.PIPE
        )
        assert process.stderr is not None
        log: list[str] = []
        base_url = metrics_url = ""
        while not (base_url and metrics_url):
            line = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
            if not line:
                pytest.fail("notifier exited before listening:\n" + "".join(log))
            log.append(line)
            found = re.search(r"listening on (http://[\d.]+:\d+)", line)
            base_url = found.group(1) if found else base_url
            found = re.search(r"metrics on (http://[\d.]+:\d+/metrics)", line)
            metrics_url = found.group(1) if found else metrics_url
        child = NotifierProcess(process, base_url, log, metrics_url)
        children.append((child, asyncio.create_task(_drain(process.stderr, log))))
        return child

    yield spawn
    for child, drain in children:
        if child.process.returncode is None:
            child.process.terminate()
            await asyncio.wait_for(child.process.wait(), 30)
        await drain


async def _drain(stream: asyncio.StreamReader, log: list[str]) -> None:
    """Keep reading a child's log so it never blocks on a full pipe."""
    async for line in stream:
        log.append(line.decode())
