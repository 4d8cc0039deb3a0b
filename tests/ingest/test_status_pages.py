"""Batch status in pages, with result links signed off the event loop.

Issue 17: ``GET /api/v1/batches/{id}`` on a completed 1,000-image batch signed 1,000 links on
ingest's event loop (0.19-0.34 s per request); 16 clients polling it pushed ``/healthz`` from 5 ms
to 369 ms median. The latency itself is measured in bench/status_load.py, not asserted here.
"""

from __future__ import annotations

import threading
from typing import Any

import aiohttp
import pytest

from client.api import Api
from ingest.presign import Presigner
from ingest.status_paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from photoenhance.settings import Settings
from tests.ingest.conftest import RunningIngest, StartIngest, image_file, record_result


async def status(ingest: RunningIngest, batch_id: str, token: str, **params: Any) -> tuple[int, dict[str, Any]]:
    async with ingest.http.get(
        ingest.url(f"/api/v1/batches/{batch_id}"), params=params, headers={"Authorization": f"Bearer {token}"}
    ) as response:
        return response.status, await response.json()


class ThreadRecordingPresigner(Presigner):
    """The real presigner, noting which thread signs each result link."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.signing_threads: list[int] = []

    def download_url(self, bucket: str, key: str, filename: str) -> str:
        self.signing_threads.append(threading.get_ident())
        return super().download_url(bucket, key, filename)


async def test_status_pages_through_declared_and_undeclared_images_by_name(
    start_ingest: StartIngest, settings: Settings
) -> None:
    ingest = await start_ingest(settings)
    declared = [f"d{i}.jpg" for i in range(7)]
    created = await ingest.create([image_file(name) for name in declared])
    batch_id, token, bucket = created["batch_id"], created["token"], settings.s3_input_bucket
    # two declared files finished, one failed, and two uploads nobody declared (direct uploads)
    await record_result(ingest.repository, batch_id, bucket, "d1.jpg", etag="e1", size=11, output_key=f"{batch_id}/d1.jpg")
    await record_result(ingest.repository, batch_id, bucket, "d4.jpg", etag="e4", size=14, output_key=None)
    await record_result(
        ingest.repository, batch_id, bucket, "a-extra.jpg", etag="x1", size=5, output_key=f"{batch_id}/a-extra.jpg"
    )
    await record_result(ingest.repository, batch_id, bucket, "z-extra.jpg", etag="x2", size=6, output_key=None)

    seen: list[dict[str, Any]] = []
    counts = []
    params: dict[str, Any] = {"limit": 3}
    pages = 0
    while True:
        code, body = await status(ingest, batch_id, token, **params)
        assert code == 200, body
        pages += 1
        assert len(body["images"]) <= 3
        seen += body["images"]
        counts.append(body["counts"])
        if body["next"] is None:
            break
        params = {"limit": 3, "after": body["next"]}
    assert pages == 3
    names = [e["name"] for e in seen]
    assert names == sorted(["a-extra.jpg", *declared, "z-extra.jpg"])
    states = {e["name"]: e["state"] for e in seen}
    assert states["d1.jpg"] == "completed" and states["d4.jpg"] == "failed" and states["d0.jpg"] == "awaiting_upload"
    assert states["a-extra.jpg"] == "completed" and states["z-extra.jpg"] == "failed"
    assert all("url" in e["result"] for e in seen if e["state"] == "completed")
    # the counters describe the whole batch on every page
    assert counts == [counts[0]] * 3
    assert counts[0]["awaiting_upload"] == 5 and counts[0]["completed"] == 2 and counts[0]["failed"] == 2


async def test_status_pages_have_a_default_and_a_largest_size(start_ingest: StartIngest, settings: Settings) -> None:
    ingest = await start_ingest(settings)
    total = MAX_PAGE_SIZE + 20
    created = await ingest.create([image_file(f"p{i:04d}.jpg") for i in range(total)])
    batch_id, token = created["batch_id"], created["token"]
    code, body = await status(ingest, batch_id, token)
    assert code == 200 and len(body["images"]) == DEFAULT_PAGE_SIZE and body["next"]
    assert body["counts"]["awaiting_upload"] == total
    code, body = await status(ingest, batch_id, token, limit=MAX_PAGE_SIZE)
    assert code == 200 and len(body["images"]) == MAX_PAGE_SIZE
    code, rest = await status(ingest, batch_id, token, limit=MAX_PAGE_SIZE, after=body["next"])
    assert [e["name"] for e in rest["images"]] == [f"p{i:04d}.jpg" for i in range(MAX_PAGE_SIZE, total)]
    assert rest["next"] is None

    for params, code_expected in [
        ({"limit": MAX_PAGE_SIZE + 1}, "invalid_limit"),
        ({"limit": 0}, "invalid_limit"),
        ({"limit": "ten"}, "invalid_limit"),
        ({"after": "%%%not a cursor"}, "invalid_cursor"),
        ({"after": "_w"}, "invalid_cursor"),  # base64 of a byte that is not UTF-8
    ]:
        code, body = await status(ingest, batch_id, token, **params)
        assert (code, body["error"]["code"]) == (400, code_expected), params


async def test_result_links_are_signed_off_the_event_loop(start_ingest: StartIngest, settings: Settings) -> None:
    presigner = ThreadRecordingPresigner(settings)
    ingest = await start_ingest(settings, presigner=presigner)
    created = await ingest.create([image_file(f"r{i}.jpg") for i in range(4)])
    batch_id, token, bucket = created["batch_id"], created["token"], settings.s3_input_bucket
    for i in range(4):
        await record_result(
            ingest.repository, batch_id, bucket, f"r{i}.jpg", etag=f"e{i}", size=9, output_key=f"{batch_id}/r{i}.jpg"
        )
    loop_thread = threading.get_ident()  # the app runs on this test's event loop
    code, body = await status(ingest, batch_id, token)
    assert code == 200 and [e["state"] for e in body["images"]] == ["completed"] * 4
    assert len(presigner.signing_threads) == 4
    assert loop_thread not in presigner.signing_threads


async def test_the_command_line_client_follows_every_page(start_ingest: StartIngest, settings: Settings) -> None:
    ingest = await start_ingest(settings)
    total = MAX_PAGE_SIZE + 7
    created = await ingest.create([image_file(f"c{i:04d}.jpg") for i in range(total)])
    async with aiohttp.ClientSession() as session:
        doc = await Api(session, ingest.base_url).get_batch(created["batch_id"], created["token"])
    assert [e["name"] for e in doc["images"]] == [f"c{i:04d}.jpg" for i in range(total)]
    assert doc["next"] is None


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_pages_follow_code_point_order_on_postgresql(start_ingest: StartIngest, settings: Settings) -> None:
    """PostgreSQL's locale collation would order "B", "a", "_x" differently from Python."""
    ingest = await start_ingest(settings)
    names = ["Beta.jpg", "alpha.jpg", "Zed.jpg", "x_y.jpg", "x-y.jpg", "éclair.jpg", "Émile.jpg", "1.jpg"]
    created = await ingest.create([image_file(name) for name in names])
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        code, body = await status(ingest, created["batch_id"], created["token"], **params)
        assert code == 200, body
        seen += [e["name"] for e in body["images"]]
        if body["next"] is None:
            break
        params = {"limit": 2, "after": body["next"]}
    assert seen == sorted(u["name"] for u in created["uploads"])
