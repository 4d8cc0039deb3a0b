"""bench/ceiling_worker.py's batch-lock measure ends at the transaction's COMMIT, not later; its
statement count counts what reaches the driver.

The pool hands the connection back with a ROLLBACK of its own (reset on return) after the
COMMIT; the measure once took that one as the lock's end. Run in a child process: the
instrument patches SQLAlchemy and ``db.connection`` for the whole process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The instrument, a database, and a table whose every COMMIT takes >= 80 ms: a deferred
# constraint trigger that sleeps runs inside it. ``main`` goes on from here.
_PREAMBLE = r"""
import asyncio, json, sys, time
sys.path.insert(0, "bench")
import ceiling_worker
ceiling_worker.instrument()
from sqlalchemy import text
from db.connection import Database

async def main(url):
    db = Database(url)
    async with db.write() as conn:
        await conn.execute(text("CREATE TABLE slow_commit (x int)"))
        await conn.execute(text(
            "CREATE FUNCTION sleep_a_little() RETURNS trigger LANGUAGE plpgsql AS "
            "'BEGIN PERFORM pg_sleep(0.08); RETURN NULL; END'"))
        await conn.execute(text(
            "CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON slow_commit DEFERRABLE INITIALLY DEFERRED "
            "FOR EACH ROW EXECUTE FUNCTION sleep_a_little()"))
"""

_CHILD = _PREAMBLE + r"""
    before = ceiling_worker.COUNTERS.statements
    async with db.read() as conn:  # leaves its own reset-on-return behind on a pooled connection
        await conn.execute(text("SELECT 1"))
    async with db.write() as conn:
        await conn.execute(text("INSERT INTO slow_commit VALUES (1)"))
        await conn.execute(text("INSERT INTO slow_commit VALUES (:x)"), [{"x": 2}, {"x": 3}])  # one executemany
        ceiling_worker._lock_started.get()[0] = time.perf_counter()  # as if the batch were locked here
        await asyncio.sleep(0.03)
    await db.dispose()
    print(json.dumps({**ceiling_worker.COUNTERS.snapshot(), "statements_before": before}))

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_lock_ends_when_commit_returns_and_its_commit_part_is_the_commit(database_url: str) -> None:
    child = subprocess.run([sys.executable, "-c", _CHILD, database_url], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    counters = json.loads(child.stdout.strip().splitlines()[-1])
    (hold,), (commit,) = counters["lock_holds_s"], counters["lock_commits_s"]
    assert 0.08 <= commit < hold  # the sleeping COMMIT, not the pool's no-op ROLLBACK after it
    assert hold >= 0.03 + 0.08
    # SELECT 1, the insert and the executemany; BEGIN, COMMIT and the pool's ROLLBACK are not counted.
    assert counters["statements"] - counters["statements_before"] == 3


_ONE_STATEMENT_CHILD = _PREAMBLE + r"""
    before = ceiling_worker.COUNTERS.snapshot()
    async with db.statement() as conn:  # committed by the server as the statement ends
        await conn.execute(text("INSERT INTO slow_commit VALUES (1)"))
    try:
        async with db.statement() as conn:
            await conn.execute(text("INSERT INTO slow_commit VALUES ('not a number')"))
    except Exception:
        pass
    await db.dispose()
    print(json.dumps({"before": before, "after": ceiling_worker.COUNTERS.snapshot()}))

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_one_statement_group_counts_as_a_write_and_its_round_trip_as_the_hold(database_url: str) -> None:
    # A group written as one statement (Database.statement) is a write transaction too, committed
    # or failed as its statement ended; the lock's hold, which the worker cannot see inside it, is
    # its whole round trip (the deferred sleep runs in the statement's own commit); no COMMIT part.
    child = subprocess.run([sys.executable, "-c", _ONE_STATEMENT_CHILD, database_url], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout.strip().splitlines()[-1])
    before, after = result["before"], result["after"]
    assert after["writes_committed"] - before["writes_committed"] == 1
    assert after["writes_failed"] - before["writes_failed"] == 1
    holds = after["lock_holds_s"][len(before["lock_holds_s"]):]
    assert len(holds) == 2 and holds[0] >= 0.08 and holds[1] < 0.08
    assert after["lock_commits_s"] == before["lock_commits_s"]
