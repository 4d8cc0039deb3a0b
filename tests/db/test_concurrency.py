"""Counters and sequence numbers stay exact with several processes writing one batch at once."""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import pytest

from db.repository import Repository
from harness.db_load import race_for_batch
from photoenhance.contracts.progress import EventType

PROCESSES = 4
IMAGES = 120


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_concurrent_completions_from_several_processes(
    database_url: str, repository: Repository
) -> None:
    await repository.create_batch("race", input_bucket="in", options={}, expected_count=IMAGES)
    names = [f"img-{n:04d}.jpg" for n in range(IMAGES)]
    started = time.perf_counter()
    with ProcessPoolExecutor(PROCESSES, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [
            pool.submit(race_for_batch, database_url, "race", names, f"worker-{n}", seed=n)
            for n in range(PROCESSES)
        ]
        results = [f.result(timeout=600) for f in futures]
    elapsed = time.perf_counter() - started
    print(f"\n{database_url.split(':')[0]}: {PROCESSES} processes, {IMAGES} images, "
          f"{PROCESSES * IMAGES} registrations, {elapsed:.2f} s")

    # Every image registered once and completed once, whoever won each race.
    assert sum(r["created"] for r in results) == IMAGES
    assert sum(r["completed"] for r in results) == IMAGES
    batch = await repository.get_batch("race")
    assert batch is not None
    assert (batch.total, batch.completed, batch.failed) == (IMAGES, IMAGES, 0)

    events = await repository.events_since("race")
    assert [e.seq for e in events] == list(range(1, IMAGES + 2)), "sequence numbers must be gapless"
    assert batch.last_seq == IMAGES + 1
    completions = [e for e in events if e.type is EventType.IMAGE_COMPLETED]
    assert sorted(e.image.name for e in completions) == names
    assert [e.counts.completed for e in completions] == list(range(1, IMAGES + 1))
    assert events[-1].type is EventType.BATCH_COMPLETED
