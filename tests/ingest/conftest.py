"""Fixtures that serve the ingest API in this process against the test's database and store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from db.connection import Database
from db.repository import Repository
from ingest.app import create_app
from photoenhance.settings import Settings


@dataclass
class RunningIngest:
    """An ingest app on a free port, with an HTTP client pointed at it."""

    base_url: str
    settings: Settings
    repository: Repository
    http: aiohttp.ClientSession

    def url(self, path: str) -> str:
        return self.base_url + path

    async def create(self, files: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        """Create a batch and return the 201 body (fails the test on any other status)."""
        async with self.http.post(self.url("/api/v1/batches"), json={"files": files, **extra}) as response:
            body = await response.json()
            assert response.status == 201, body
            return body


StartIngest = Callable[..., Awaitable[RunningIngest]]


@pytest.fixture
async def start_ingest(database: Database) -> AsyncIterator[StartIngest]:
    """Start ingest apps over the test's database: ``start(settings, **app_kwargs)``."""
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(settings: Settings, **app_kwargs: Any) -> RunningIngest:
        repository = Repository(database)
        runner = web.AppRunner(create_app(settings, repository=repository, **app_kwargs), shutdown_timeout=5)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        http = aiohttp.ClientSession()
        sessions.append(http)
        return RunningIngest(f"http://{host}:{port}", settings, repository, http)

    try:
        yield start
    finally:
        for session in sessions:
            await session.close()
        for runner in runners:
            await runner.cleanup()


def image_file(name: str = "photo.jpg", size: int = 1000, content_type: str = "image/jpeg") -> dict[str, Any]:
    """One entry of a create-batch request."""
    return {"name": name, "size": size, "content_type": content_type}
