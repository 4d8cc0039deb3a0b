"""Fixtures that serve the ingest API in this process against the test's database and store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from db.connection import Database
from db.records import ImageRecord, ImageVersion
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


async def record_result(
    repository: Repository, batch_id: str, bucket: str, name: str, *, etag: str, size: int, output_key: str | None,
    code: str = "not_an_image", reason: str = "not an image: no known signature",
) -> ImageRecord:
    """Register an uploaded image and finish it as the processor would: completed with
    ``output_key``, or failed (``output_key=None``) with a recorded reason."""
    registration = await repository.register_image(
        ImageVersion(bucket=bucket, batch_id=batch_id, key=f"{batch_id}/{name}", name=name, etag=etag, size=size)
    )
    image = registration.image
    claimed = await repository.claim_image(image.id, "test-worker", 60)
    assert claimed is not None
    if output_key is None:
        await repository.fail_image(image.id, reason=reason, code=code, owner="test-worker")
    else:
        await repository.complete_image(image.id, "test-worker", output_key=output_key)
    final = await repository.get_image(image.id)
    assert final is not None
    return final
