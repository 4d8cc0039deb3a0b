"""bench/row_locks.py: the share of the time a batch row is locked, as PostgreSQL reports it.

A real PostgreSQL (pgrowlocks, its contrib extension): a connection locks a ``batches`` row for
a known part of each cycle and the sampled share must match it.
"""

from __future__ import annotations

import time

import asyncpg
import pytest

from bench.row_locks import RowLockSampler, mean_locked


def test_the_mean_counts_only_samples_inside_the_window() -> None:
    samples = [(1.0, 5), (2.0, 1), (3.0, 0), (4.0, 1), (9.0, 7)]
    assert mean_locked(samples, 2.0, 4.0) == pytest.approx(2 / 3)
    assert mean_locked(samples, 5.0, 6.0) is None


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_the_sampled_share_is_the_share_the_row_was_locked(database_url: str) -> None:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("CREATE TABLE batches (id text PRIMARY KEY, n int); INSERT INTO batches VALUES ('b', 0)")
        sampler = RowLockSampler(database_url).start()
        idle_from = time.time()
        time.sleep(0.3)
        idle_to = locking_from = time.time()
        held = 0.0
        for _ in range(60):  # locked 4 ms of every 10
            async with conn.transaction():
                await conn.execute("UPDATE batches SET n = n + 1 WHERE id = 'b'")
                locked_at = time.perf_counter()
                time.sleep(0.004)
            held += time.perf_counter() - locked_at
            time.sleep(0.006)
        locking_to = time.time()
        samples = sampler.stop()
    finally:
        await conn.close()
    assert mean_locked(samples, idle_from, idle_to) == 0
    share = held / (locking_to - locking_from)
    sampled = mean_locked(samples, locking_from, locking_to)
    assert sampled is not None and abs(sampled - share) < 0.12, (sampled, share)
