"""SQLite busy storm: four worker processes and three storm processes write one SQLite file at once.

tests/db/test_concurrency.py races repository calls from several processes; this goes further,
with the real thing under a lock storm. Four ``photoenhance processor`` processes process one
batch on one SQLite database while, from their own processes,

- a lock hog (:func:`tests.reliability.sqlite_storm.hog_write_lock`) takes the write lock again
  and again, holding it 10-40 ms at a go with 10-40 ms pauses, and
- two racers (:func:`harness.db_load.race_for_batch`) register, claim and complete a second
  batch's images as fast as they can.

Every writer waits for the lock within its busy timeout. The results must be exact for everyone:
the workers' batch exactly once (:func:`tests.reliability.exactly_once.assert_exactly_once`), the
racers' batch with exact counters and gapless events, and every row the hog committed present.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from db.repository import Repository
from harness.db_load import race_for_batch
from harness.processor import ProgressRecorder, WorkerProcess, eventually, free_port
from photoenhance.settings import Settings
from tests.reliability.exactly_once import assert_exactly_once, assert_recorded_once, metric, upload_batch
from tests.reliability.sqlite_storm import TICKS_TABLE, create_ticks_table, hog_write_lock

pytestmark = [pytest.mark.objectstore, pytest.mark.reliability]

WORKERS = 4
IMAGES = 48
RACERS = 2
#: Images of the racers' batch (each racer registers every one; whoever claims it completes it).
RACE_IMAGES = 150


async def test_four_workers_and_a_writer_storm_on_one_sqlite_file(
    processor_settings: Settings, repository: Repository, worker_processes: Callable[..., WorkerProcess],
    progress: ProgressRecorder, tmp_path: Path, record_property: Callable[[str, object], None],
) -> None:
    settings = processor_settings.replace(prefetch=4)
    db_path = Path(make_url(settings.database_url).database or "")
    assert db_path.is_file(), "the storm needs the file-backed SQLite database"
    create_ticks_table(db_path)
    await repository.create_batch("storm", input_bucket="in", options={}, expected_count=RACE_IMAGES)
    race_names = [f"race-{n:04d}.jpg" for n in range(RACE_IMAGES)]

    workers = [worker_processes(settings.replace(processor_port=free_port()), f"w{n}") for n in range(WORKERS)]
    for worker in workers:
        await asyncio.to_thread(worker.wait_healthy)

    stop = tmp_path / "stop-the-storm"
    spawn = multiprocessing.get_context("spawn")  # fresh interpreters: no forked event loop or sockets
    with ProcessPoolExecutor(1 + RACERS, mp_context=spawn) as pool:
        hog = pool.submit(hog_write_lock, str(db_path), str(stop), "hog", 7)
        try:
            await eventually(lambda: _hog_started(db_path), what="the lock hog to start")
            racers = [
                pool.submit(race_for_batch, settings.database_url, "storm", race_names, f"racer-{n}", n)
                for n in range(RACERS)
            ]
            started, ticks_before = time.monotonic(), await _tick_count(db_path)
            sources = await upload_batch(settings, "stormy", IMAGES)
            await assert_exactly_once(repository, settings, "stormy", sources, recorder=progress)
            batch_s, ticks_during = time.monotonic() - started, await _tick_count(db_path) - ticks_before
            race_results = [await asyncio.wrap_future(r) for r in racers]
        finally:
            stop.touch()
        hogged = await asyncio.wrap_future(hog)

    record_property("batch_s", round(batch_s, 1))
    record_property("hog", hogged)
    # The storm was real: the hog took turns at the lock all through the run, during the batch
    # too, and had to wait for the others' locks. Its count of turns says little more: the faster
    # the workers, the shorter the batch, and under the workers' and racers' writes the hog can
    # wait most of a batch for one turn (2026-12-05: 3 turns in a 2.0 s batch, one wait 2.1 s;
    # 19 turns in a 2.9 s run, which failed the earlier "at least 20").
    record_property("hog_commits_during_batch", ticks_during)
    assert hogged["commits"] >= 10 and ticks_during >= 1 and hogged["longest_wait_s"] >= 0.01, (ticks_during, hogged)
    assert await _tick_count(db_path) == hogged["commits"], "every row the hog committed is there"

    # The workers shared the batch and did nothing twice.
    processed = [metric(w.metrics(), "photoenhance_images_processed_total") for w in workers]
    record_property("processed_per_worker", processed)
    record_property(
        "database_retries", sum(metric(w.metrics(), "photoenhance_retries_total", reason="database_unavailable")
                                for w in workers),
    )
    assert sum(processed) == IMAGES
    assert sum(n > 0 for n in processed) >= 2, f"several workers took part: {processed}"

    # The racers' batch: each image registered once and completed once, counters and events exact.
    assert sum(r["created"] for r in race_results) == RACE_IMAGES
    assert sum(r["completed"] for r in race_results) == RACE_IMAGES
    await assert_recorded_once(repository, "storm", race_names)

    for worker in workers:
        assert worker.terminate() == 0, worker.log()


async def _tick_count(db_path: Path) -> int:
    """Rows the hog has committed."""

    def count() -> int:
        with sqlite3.connect(db_path, timeout=30) as conn:
            return conn.execute(f"SELECT count(*) FROM {TICKS_TABLE} WHERE who = 'hog'").fetchone()[0]

    return await asyncio.to_thread(count)


async def _hog_started(db_path: Path) -> bool:
    return await _tick_count(db_path) > 0
