"""The ZIP of a batch's results, streamed from the real object store through the ingest API."""

from __future__ import annotations

import asyncio
import io
import logging
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from harness.objectstore import put_bytes
from photoenhance.s3 import minio_client
from photoenhance.settings import Settings
from tests.ingest.conftest import StartIngest, image_file, record_result

pytestmark = pytest.mark.objectstore


async def put_result(settings: Settings, key: str, data: bytes) -> None:
    await asyncio.to_thread(put_bytes, minio_client(settings), settings.s3_output_bucket, key, data, "image/jpeg")


async def download(ingest, path: str, **params: str) -> tuple[int, dict[str, str], bytes]:  # type: ignore[no-untyped-def]
    async with ingest.http.get(ingest.url(path), params=params) as response:
        return response.status, dict(response.headers), await response.read()


async def test_archive_holds_the_results_and_lists_what_is_missing(
    store_settings: Settings, start_ingest: StartIngest, tmp_path: Path
) -> None:
    ingest = await start_ingest(store_settings)
    created = await ingest.create(
        [image_file("one.png"), image_file("two.jpg"), image_file("bad.jpg"), image_file("never.jpg")]
    )
    batch_id, bucket = created["batch_id"], store_settings.s3_input_bucket
    results = {"one.jpg": b"\xff\xd8one" * 1000, "two.jpg": b"\xff\xd8two" * 777}
    for name, data in results.items():
        await put_result(store_settings, f"{batch_id}/{name}", data)
    await record_result(ingest.repository, batch_id, bucket, "one.png", etag="e1", size=10, output_key=f"{batch_id}/one.jpg")
    await record_result(ingest.repository, batch_id, bucket, "two.jpg", etag="e2", size=10, output_key=f"{batch_id}/two.jpg")
    await record_result(ingest.repository, batch_id, bucket, "bad.jpg", etag="e3", size=10, output_key=None)

    # the ZIP link is opened by the browser itself, so the token rides in the query
    status, headers, body = await download(ingest, f"/api/v1/batches/{batch_id}/archive", token=created["token"])
    assert status == 200
    assert headers["Content-Type"] == "application/zip"
    assert headers["Content-Disposition"] == (
        f"attachment; filename=\"photoenhance-{batch_id}.zip\"; filename*=UTF-8''photoenhance-{batch_id}.zip"
    )
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert archive.testzip() is None
    assert archive.namelist() == ["one.jpg", "two.jpg", "FAILURES.txt"]
    assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    assert {name: archive.read(name) for name in results} == results
    failures = archive.read("FAILURES.txt").decode()
    assert "2 image(s) are not in this archive" in failures
    assert "bad.jpg\tfailed (not_an_image): not an image: no known signature" in failures
    assert "never.jpg\tawaiting upload" in failures
    if shutil.which("unzip"):
        saved = tmp_path / "batch.zip"
        saved.write_bytes(body)
        check = subprocess.run(["unzip", "-t", str(saved)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr

    # the status lists the same, with working result links
    async with ingest.http.get(
        ingest.url(f"/api/v1/batches/{batch_id}"), headers={"Authorization": f"Bearer {created['token']}"}
    ) as response:
        status_body = await response.json()
    states = {i["name"]: i["state"] for i in status_body["images"]}
    assert states == {"one.png": "completed", "two.jpg": "completed", "bad.jpg": "failed", "never.jpg": "awaiting_upload"}
    assert status_body["counts"] == {
        "expected": 4, "uploaded": 3, "awaiting_upload": 1, "waiting_for_worker": 0, "pending": 0, "completed": 2,
        "failed": 1, "cancelled": 0,
    }
    link = next(i for i in status_body["images"] if i["name"] == "one.png")["result"]
    assert link["key"] == f"{batch_id}/one.jpg"
    async with ingest.http.get(link["url"]) as response:
        assert (response.status, await response.read()) == (200, results["one.jpg"])


async def test_a_complete_batch_has_no_failures_file_and_a_vanished_result_is_listed(
    store_settings: Settings, start_ingest: StartIngest
) -> None:
    ingest = await start_ingest(store_settings)
    created = await ingest.create([image_file("a.jpg"), image_file("b.jpg")])
    batch_id, bucket = created["batch_id"], store_settings.s3_input_bucket
    await put_result(store_settings, f"{batch_id}/a.jpg", b"A" * 100)
    await put_result(store_settings, f"{batch_id}/b.jpg", b"B" * 100)
    await record_result(ingest.repository, batch_id, bucket, "a.jpg", etag="ea", size=1, output_key=f"{batch_id}/a.jpg")
    await record_result(ingest.repository, batch_id, bucket, "b.jpg", etag="eb", size=1, output_key=f"{batch_id}/b.jpg")
    path = f"/api/v1/batches/{batch_id}/archive"

    _, _, body = await download(ingest, path, token=created["token"])
    assert zipfile.ZipFile(io.BytesIO(body)).namelist() == ["a.jpg", "b.jpg"]

    # lifecycle expiry (or an operator) removed one result: the archive says so instead of failing
    await asyncio.to_thread(minio_client(store_settings).remove_object, store_settings.s3_output_bucket, f"{batch_id}/b.jpg")
    _, _, body = await download(ingest, path, token=created["token"])
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert archive.namelist() == ["a.jpg", "FAILURES.txt"]
    assert "b.jpg\tresult object unavailable (the store answered 404)" in archive.read("FAILURES.txt").decode()


async def test_hostile_keys_of_direct_uploads_become_safe_entry_names(
    store_settings: Settings, start_ingest: StartIngest
) -> None:
    """A direct uploader picks its own keys; the API key reads any batch; entries stay inside."""
    ingest = await start_ingest(store_settings.replace(api_keys=("server-key",)))
    batch_id, bucket = "direct-batch", store_settings.s3_input_bucket
    await ingest.repository.create_batch(batch_id, input_bucket=bucket, options={}, source="direct")
    names = {
        "nested/dir/p.jpg": "nested/dir/p.jpg",
        "...hidden/q.jpg": "hidden/q.jpg",
        'we"ird:na me.jpg': "we_ird_na_me.jpg",
        "C:\\win\\a.jpg": "C_win_a.jpg",
        "Same.jpg": "Same.jpg",
        "same.JPG": "same-2.jpg",
    }
    for i, name in enumerate(names):
        output = f"{batch_id}/{name.rsplit('.', 1)[0]}.jpg"
        await put_result(store_settings, output, name.encode())
        await record_result(ingest.repository, batch_id, bucket, name, etag=f"e{i}", size=1, output_key=output)
    async with ingest.http.get(
        ingest.url(f"/api/v1/batches/{batch_id}/archive"), headers={"Authorization": "Bearer server-key"}
    ) as response:
        assert response.status == 200
        archive = zipfile.ZipFile(io.BytesIO(await response.read()))
    entries = {archive.read(info).decode(): info.filename for info in archive.infolist()}
    assert entries == names


async def test_a_download_dropped_mid_stream_logs_one_info_line(
    store_settings: Settings, start_ingest: StartIngest, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that closes the connection mid-archive is routine: one INFO line, no traceback."""
    ingest = await start_ingest(store_settings)
    created = await ingest.create([image_file("big.png")])
    batch_id = created["batch_id"]
    # large enough that the archive cannot fit in the socket buffers before the client leaves
    await put_result(store_settings, f"{batch_id}/big.jpg", b"\xff\xd8" + bytes(24 * 1024 * 1024))
    await record_result(
        ingest.repository, batch_id, store_settings.s3_input_bucket, "big.png",
        etag="e1", size=10, output_key=f"{batch_id}/big.jpg",
    )
    host, port = ingest.base_url.removeprefix("http://").split(":")
    caplog.set_level(logging.INFO)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET /api/v1/batches/{batch_id}/archive?token={created['token']} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    )
    await writer.drain()
    first = await reader.read(64 * 1024)
    assert first.startswith(b"HTTP/1.1 200")
    writer.transport.abort()  # a reset, as a closed tab or a lost network gives

    def went_away() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "ingest.handlers.archive" and "went away" in r.getMessage()]

    for _ in range(100):
        if went_away():
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)  # anything logged after the handler returned
    assert len(went_away()) == 1
    assert went_away()[0].levelno == logging.INFO
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [], [(r.name, r.getMessage()) for r in errors]
