"""A writer that hammers one SQLite file from its own OS process (importable by ``spawn``).

:func:`hog_write_lock` takes SQLite's write lock again and again (``BEGIN IMMEDIATE``), writes a
row into its own table and holds the lock a few tens of milliseconds before committing, until a
stop file appears. Every other writer of the file (worker processes, other storm processes) must
wait for the lock within its busy timeout; the hog's own rows let the test check that its writes,
too, were neither lost nor doubled.
"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

__all__ = ["TICKS_TABLE", "create_ticks_table", "hog_write_lock"]

#: The hog's own table in the shared database file.
TICKS_TABLE = "storm_ticks"


def create_ticks_table(db_path: Path) -> None:
    """Create the hog's table (before any worker opens the file, so no one sees the schema change)."""
    with sqlite3.connect(db_path, timeout=30) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {TICKS_TABLE} (n INTEGER PRIMARY KEY, who TEXT, held_ms REAL)")


def hog_write_lock(
    db_path: str, stop_path: str, who: str, seed: int, hold_ms: tuple[float, float] = (10.0, 40.0),
    pause_ms: tuple[float, float] = (10.0, 40.0), busy_timeout_s: float = 30.0,
) -> dict[str, float]:
    """Hold the write lock for ``hold_ms`` (uniform range), let go for ``pause_ms``, repeat until
    ``stop_path`` exists. Returns commits, seconds spent holding the lock, the longest wait for it
    and the total run time."""
    rng = random.Random(seed)
    # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, as the product's writers do.
    conn = sqlite3.connect(db_path, timeout=busy_timeout_s, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    commits, held_s, longest_wait_s = 0, 0.0, 0.0
    started = time.monotonic()
    stop = Path(stop_path)
    try:
        while not stop.exists():
            asked = time.monotonic()
            conn.execute("BEGIN IMMEDIATE")
            got = time.monotonic()
            longest_wait_s = max(longest_wait_s, got - asked)
            hold = rng.uniform(*hold_ms) / 1000
            conn.execute(f"INSERT INTO {TICKS_TABLE} (who, held_ms) VALUES (?, ?)", (who, hold * 1000))
            time.sleep(hold)  # the lock is held: everyone else's BEGIN IMMEDIATE waits
            conn.execute("COMMIT")
            held_s += time.monotonic() - got
            commits += 1
            time.sleep(rng.uniform(*pause_ms) / 1000)
    finally:
        conn.close()
    return {
        "commits": commits,
        "held_s": held_s,
        "longest_wait_s": longest_wait_s,
        "run_s": time.monotonic() - started,
    }
