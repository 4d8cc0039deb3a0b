"""Limits hold across replicas: two real ingest processes over one database, hit at once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from db.connection import Database
from harness.processor import free_port
from harness.stack import ServiceProcess
from photoenhance.settings import Settings

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)

API_KEY = "quota-test-key-0000000000000001"


@pytest.fixture
def two_ingests(settings: Settings, database: Database, tmp_path: Path) -> Iterator[tuple[Settings, list[str]]]:
    """Two ``photoenhance ingest`` processes over the test's migrated database."""
    shared = settings.replace(
        api_keys=(API_KEY,),
        quota_public_batches_per_hour=7,
        quota_public_open_batches=0,
        quota_key_open_batches=4,
        quota_key_batches_per_hour=0,
        quota_public_files_per_day=0,
        quota_public_bytes_per_day=0,
    )
    processes = []
    for n in (1, 2):
        port = free_port()
        processes.append(ServiceProcess("ingest", shared.replace(ingest_port=port), port, tmp_path / f"ingest-{n}.log"))
    try:
        for process in processes:
            process.start()
        yield shared, [p.url for p in processes]
    finally:
        for process in processes:
            process.stop()


async def _create_many(
    urls: list[str], count: int, *, headers: dict[str, str] | None = None, per_request_headers: bool = False
) -> list[tuple[int, dict, dict[str, str]]]:
    body = {"files": [{"name": "a.jpg", "size": 1000, "content_type": "image/jpeg"}]}
    async with aiohttp.ClientSession() as http:

        async def one(i: int) -> tuple[int, dict, dict[str, str]]:
            sent = dict(headers or {})
            if per_request_headers:
                sent["X-Forwarded-For"] = f"198.51.100.{i}"  # forged: a new "client" each time
            async with http.post(urls[i % len(urls)] + "/api/v1/batches", json=body, headers=sent) as response:
                return response.status, await response.json(), dict(response.headers)

        return await asyncio.gather(*(one(i) for i in range(count)))


async def test_batches_per_hour_hold_across_two_replicas_and_forged_forwarding_is_ignored(
    two_ingests: tuple[Settings, list[str]],
) -> None:
    _settings, urls = two_ingests
    # 40 creations at once, alternating between the replicas, each with a different forged
    # X-Forwarded-For from an untrusted peer: all count against 127.0.0.1.
    results = await _create_many(urls, 40, per_request_headers=True)
    statuses = Counter(status for status, _, _ in results)
    assert statuses == {201: 7, 429: 33}, statuses
    refused = [(body, headers) for status, body, headers in results if status == 429]
    for body, headers in refused:
        assert body["error"]["code"] == "quota_batches_per_hour"
        assert 1 <= int(headers["Retry-After"]) <= 3600
    accepted_on = Counter(i % 2 for i, (status, _, _) in enumerate(results) if status == 201)
    print(f"accepted {statuses[201]} of 40 (limit 7), per replica {dict(accepted_on)}")


async def test_open_batches_per_api_key_hold_across_two_replicas(two_ingests: tuple[Settings, list[str]]) -> None:
    _settings, urls = two_ingests
    results = await _create_many(urls, 20, headers={"Authorization": f"Bearer {API_KEY}"})
    statuses = Counter(status for status, _, _ in results)
    assert statuses == {201: 4, 429: 16}, statuses
    assert {body["error"]["code"] for status, body, _ in results if status == 429} == {"quota_open_batches"}
    # The key's batches count against the key, not the address: the public allowance is untouched.
    public = await _create_many(urls, 1)
    assert public[0][0] == 201, public[0][1]
