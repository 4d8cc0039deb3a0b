"""Memory is bounded before it is spent, proven with a real worker process's peak memory.

The attack (issue 17): a 162 KB PNG that honestly holds 7071 x 7071 black pixels (under
``MAX_INPUT_PIXELS``) sent with ``upscale: 4`` at ``fast`` took a worker's peak resident memory
from 129 MB to 8.1 GB, for a 28284 x 28284 result. Now ``MAX_OUTPUT_PIXELS`` refuses it from the
header, and the worker's memory budget makes four large images that are allowed wait their turn
instead of running at once (processor/admission.py).

A watchdog samples the worker's resident memory every few milliseconds and kills it past a bound
well above what the test allows, so a regression fails the test without taking the machine's
memory with it (on the old code the first test is killed at about 1.5 GB instead of 8 GB).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from db.repository import Repository
from harness.bombs import attack_png, large_png
from harness.processor import WorkerProcess, eventually, image_bytes, memory_kib, put_async
from photoenhance.contracts.states import ImageState
from photoenhance.settings import Settings

pytestmark = [pytest.mark.security, pytest.mark.objectstore]

MIB = 1 << 20

#: Peak resident memory a fast-only worker may reach while refusing the attack (it idles at ~130 MiB).
FAST_WORKER_PEAK = 600 * MIB

#: What refusing it from the header may add to the worker's peak: decoding it alone would take 143 MiB.
HEADER_ONLY_GROWTH = 32 * MIB

#: Resident memory at which the watchdog kills a worker (a test failure, not an outage of the machine).
KILL_ABOVE = 1500 * MIB

#: The budget of the four-at-once test, and each image there: 1500 x 1500 RGB at upscale 4 is a
#: 6000 x 6000 result, estimated at ~412 MiB, so two never fit together.
BUDGET_MB = 500
LARGE_EDGE = 1500








@contextmanager
def watchdog(pid: int, kill_above: int) -> Iterator[list[int]]:
    """Kill ``pid`` if its resident memory passes ``kill_above`` bytes; yields the RSS that did."""
    tripped: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.005):
            try:
                rss = memory_kib(pid)["VmRSS"] * 1024
            except (OSError, KeyError):
                return
            if rss > kill_above:
                tripped.append(rss)
                os.kill(pid, signal.SIGKILL)
                return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield tripped
    finally:
        stop.set()
        thread.join()


async def final_image(repository: Repository, batch_id: str, name: str) -> Any:
    snapshot = await repository.batch_snapshot(batch_id)
    found = [i for i in snapshot.images if i.name == name and i.state.is_final] if snapshot else []
    return found[0] if found else None


async def warm_up(settings: Settings, repository: Repository, batch_id: str, worker: WorkerProcess) -> int:
    """Process one small photo (first-use allocations behind us); the peak after it, bytes."""
    await put_async(settings, f"{batch_id}/before.jpg", image_bytes(seed=1), {"photoenhance-quality": "fast"})
    done = await eventually(lambda: final_image(repository, batch_id, "before.jpg"), what="the first photo")
    assert done.state is ImageState.COMPLETED, done.reason
    return memory_kib(worker.process.pid)["VmHWM"] * 1024


async def test_the_162_kb_upload_at_upscale_4_fails_from_its_header_and_the_worker_goes_on(
    processor_settings: Settings, repository: Repository, worker_processes: Callable[..., WorkerProcess]
) -> None:
    settings = processor_settings  # MAX_OUTPUT_PIXELS and the memory budget at their defaults
    data = attack_png()
    assert len(data) < 170_000
    worker = worker_processes(settings, "attack-worker")
    await asyncio.to_thread(worker.wait_healthy)
    batch_id = "attack"
    baseline = await warm_up(settings, repository, batch_id, worker)

    with watchdog(worker.process.pid, KILL_ABOVE) as tripped:
        await put_async(settings, f"{batch_id}/bomb.png", data, {"photoenhance-quality": "fast", "photoenhance-upscale": "4"})
        image = await eventually(
            lambda: final_image(repository, batch_id, "bomb.png") if not tripped else _killed(tripped),
            what="the 7071x7071 upload to be final",
        )
    assert (image.state, image.code, image.attempts) == (ImageState.FAILED, "output_too_large", 1), image.reason
    assert "28284x28284" in image.reason
    assert "64 megapixels (MAX_OUTPUT_PIXELS)" in image.reason
    assert re.search(r"the largest upscale that fits is 1\.13$", image.reason), image.reason

    await put_async(settings, f"{batch_id}/after.jpg", image_bytes(seed=2), {"photoenhance-quality": "fast"})
    after = await eventually(lambda: final_image(repository, batch_id, "after.jpg"), what="the next photo")
    assert after.state is ImageState.COMPLETED, after.reason

    peak = memory_kib(worker.process.pid)["VmHWM"] * 1024
    print(f"attack: baseline {baseline / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB")
    assert peak < FAST_WORKER_PEAK, f"peak {peak / MIB:.0f} MiB (baseline {baseline / MIB:.0f} MiB)"
    assert peak - baseline < HEADER_ONLY_GROWTH, f"peak {peak / MIB:.0f} MiB (baseline {baseline / MIB:.0f} MiB)"
    assert (worker.health() or {}).get("ok"), worker.log()
    assert 'photoenhance_images_failed_total{code="output_too_large"} 1.0' in worker.metrics()


async def test_four_large_images_at_once_wait_for_the_memory_budget_and_all_complete(
    processor_settings: Settings, repository: Repository, worker_processes: Callable[..., WorkerProcess]
) -> None:
    settings = processor_settings.replace(worker_memory_budget_mb=BUDGET_MB, prefetch=4)
    uploads = {f"large-{n}.png": large_png(n, LARGE_EDGE) for n in range(4)}
    worker = worker_processes(settings, "budget-worker")
    await asyncio.to_thread(worker.wait_healthy)
    batch_id = "four-large"
    baseline = await warm_up(settings, repository, batch_id, worker)

    meta = {"photoenhance-quality": "fast", "photoenhance-upscale": "4"}
    with watchdog(worker.process.pid, baseline + KILL_ABOVE) as tripped:
        await asyncio.gather(*(put_async(settings, f"{batch_id}/{name}", data, meta) for name, data in uploads.items()))
        for name in uploads:
            image = await eventually(
                lambda name=name: final_image(repository, batch_id, name) if not tripped else _killed(tripped),
                what=f"{name} to be final",
            )
            assert image.state is ImageState.COMPLETED, image.reason
            assert image.report["output"] == {"width": 6000, "height": 6000}

    grew = memory_kib(worker.process.pid)["VmHWM"] * 1024 - baseline
    print(f"four at once: baseline {baseline / MIB:.0f} MiB, peak growth {grew / MIB:.0f} MiB, budget {BUDGET_MB} MiB")
    assert grew <= BUDGET_MB * MIB, (
        f"the worker's peak grew by {grew / MIB:.0f} MiB over its baseline of {baseline / MIB:.0f} MiB, "
        f"more than the {BUDGET_MB} MiB budget"
    )
    assert (worker.health() or {}).get("ok"), worker.log()


async def _killed(tripped: list[int]) -> None:
    raise AssertionError(f"the worker passed {tripped[0] / MIB:.0f} MiB of resident memory and was killed")
