"""The archive's memory stays flat: a 200 MiB batch streamed through a real ``photoenhance ingest``
process, whose peak RSS (VmHWM) is read from /proc by this, separate, process.

Prints the figures; the one assertion is a memory-boundedness check with a generous margin
(the archive is larger than the bound several times over), never a speed check.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import aiohttp
import pytest

from db.repository import Repository
from harness.services import free_port
from photoenhance.contracts.tokens import new_batch_token
from photoenhance.s3 import minio_client
from photoenhance.settings import Settings
from tests.ingest.conftest import record_result

pytestmark = [pytest.mark.objectstore, pytest.mark.reliability]

RESULTS = 40
RESULT_BYTES = 5 * 1024 * 1024  # 40 x 5 MiB = 200 MiB
#: Growth of the ingest process's peak RSS allowed while it streams the archive.
MAX_GROWTH_BYTES = 64 * 1024 * 1024
#: How long the ingest process may take to answer /healthz after it starts.
STARTUP_DEADLINE_S = 60


def vm_hwm_bytes(pid: int) -> int:
    """Peak resident set size of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM line")


async def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    async with aiohttp.ClientSession() as http:
        while True:
            assert process.poll() is None, "ingest exited during start-up"
            try:
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"ingest did not answer {url} within {STARTUP_DEADLINE_S} s")
            await asyncio.sleep(0.2)


async def test_streaming_a_200_mib_archive_keeps_ingest_memory_flat(
    store_settings: Settings, repository: Repository, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    batch_id = "01MEMORYTEST0000000000000A"
    token, token_hash = new_batch_token()
    bucket = store_settings.s3_input_bucket
    await repository.create_batch(batch_id, input_bucket=bucket, options={}, expected_count=RESULTS, token_hash=token_hash)
    client = minio_client(store_settings)

    def upload(i: int) -> None:
        data = os.urandom(RESULT_BYTES)
        key = f"{batch_id}/r{i:03}.jpg"
        client.put_object(store_settings.s3_output_bucket, key, io.BytesIO(data), len(data), content_type="image/jpeg")

    for i in range(RESULTS):
        await asyncio.to_thread(upload, i)
        await record_result(
            repository, batch_id, bucket, f"r{i:03}.jpg", etag=f"e{i}", size=1, output_key=f"{batch_id}/r{i:03}.jpg"
        )

    port = free_port()
    env = {**os.environ, **store_settings.to_env(), "INGEST_HOST": "127.0.0.1", "INGEST_PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "photoenhance", "ingest"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_healthy(f"{base}/healthz", process)
        baseline = vm_hwm_bytes(process.pid)
        target = tmp_path / "batch.zip"
        started = time.perf_counter()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/v1/batches/{batch_id}/archive", params={"token": token}) as response:
                assert response.status == 200
                with target.open("wb") as out:
                    async for chunk in response.content.iter_chunked(64 * 1024):
                        out.write(chunk)
        seconds = time.perf_counter() - started
        peak = vm_hwm_bytes(process.pid)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    size = target.stat().st_size
    with zipfile.ZipFile(target) as archive:
        assert len(archive.infolist()) == RESULTS
        assert archive.testzip() is None
    mib = 1024 * 1024
    figures = {
        "archive_mib": round(size / mib, 1),
        "ingest_rss_before_mib": round(baseline / mib, 1),
        "ingest_peak_rss_mib": round(peak / mib, 1),
        "ingest_peak_growth_mib": round((peak - baseline) / mib, 1),
        "seconds": round(seconds, 1),
    }
    for name, value in figures.items():
        record_property(name, value)
    print(f"\narchive streaming: {figures}")
    assert size > RESULTS * RESULT_BYTES
    assert peak - baseline < MAX_GROWTH_BYTES, f"ingest memory grew with the archive: {figures}; {stderr[-2000:]!r}"
