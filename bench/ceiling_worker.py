"""A processor worker for bench/ceiling.py, instrumented; never a user-facing level or option.

Run as a script by the benchmark only, with ``PYTHONPATH`` and the working directory set to the
tree under test (this file imports nothing of the tree it lives in, so a control tree at another
commit can be measured with the same instrument)::

    python bench/ceiling_worker.py --worker-id NAME --stats DIR [--engine passthrough|fast]

``--engine passthrough`` hands the pipeline an engine stand-in that returns each input unchanged,
so what the process spends is everything but the engine; ``fast`` loads the real engine.

Counted inside the process (the tree's own code is wrapped, not changed):

- write transactions: each ``Database.write()`` block that committed (and those that did not), and
  each ``Database.statement()`` block (a group written as one statement, its own transaction);
- read transactions: each ``Database.read()`` block;
- batch lock: from the moment a transaction's first batch-row lock statement returned (``_lock_batch``,
  or ``_lock_and_count`` where the tree locks the batch last) to the moment its COMMIT (or ROLLBACK)
  returned, one span per transaction; on SQLite, whose write lock is the whole database's, from
  the moment the transaction had begun (``BEGIN IMMEDIATE``); for a one-statement group, its whole
  round trip (an upper bound: ``--sample-locks`` gives the server's side);
- codec CPU: the thread CPU time spent in ``decode_image`` and ``encode_image``;
- statements: each one the dialect hands its driver (a multi-row insert is one; COMMIT and
  ROLLBACK are not counted, nor PostgreSQL's BEGIN, which the driver sends itself; SQLite's
  ``BEGIN IMMEDIATE``, which the tree sends as a statement, is).

On SIGUSR1 the counters so far are written to ``DIR/<worker-id>-<n>.json`` (n counts from 1): the
benchmark takes one snapshot before and one after the measured batches and subtracts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import os
import signal
import sys
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

# The script's own folder (bench/) must not shadow anything of the tree under test.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)


class Counters:
    """What the instrumented process has done so far."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.writes_committed = 0
        self.writes_failed = 0
        self.reads = 0
        self.write_s = 0.0
        self.lock_holds_s: list[float] = []
        #: Of each transaction's hold (same order; a one-statement group's has none told apart),
        #: the part from entering COMMIT (or ROLLBACK) to its return.
        self.lock_commits_s: list[float] = []
        self.codec_cpu_s = 0.0
        self.statements = 0

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "writes_committed": self.writes_committed,
                "writes_failed": self.writes_failed,
                "reads": self.reads,
                "write_s": self.write_s,
                "lock_holds_s": list(self.lock_holds_s),
                "lock_commits_s": list(self.lock_commits_s),
                "codec_cpu_s": self.codec_cpu_s,
                "statements": self.statements,
                "process_cpu_s": time.process_time(),
                "time": time.time(),
            }


COUNTERS = Counters()
_lock_started: contextvars.ContextVar[list[float | None] | None] = contextvars.ContextVar("lock_started", default=None)


def instrument() -> None:
    """Wrap the tree's database and codec entry points with the counters."""
    import db.connection as connection
    import db.transactions as transactions
    import processor.pipeline as pipeline

    original_write = connection.Database.write
    original_read = connection.Database.read
    original_lock = transactions.Transactions._lock_batch

    from sqlalchemy.engine.default import DefaultDialect

    #: When each DBAPI connection's first COMMIT or ROLLBACK since its write transaction began was
    #: entered and returned (the lock's end), by id. The first only: the pool's reset-on-return
    #: (a no-op ROLLBACK) follows the COMMIT before the write block has closed.
    ended_at: dict[int, tuple[float, float]] = {}
    original_commit, original_rollback = DefaultDialect.do_commit, DefaultDialect.do_rollback

    def do_commit(self: Any, dbapi_connection: Any) -> None:
        entered = time.perf_counter()
        original_commit(self, dbapi_connection)
        ended_at.setdefault(id(dbapi_connection), (entered, time.perf_counter()))

    def do_rollback(self: Any, dbapi_connection: Any) -> None:
        entered = time.perf_counter()
        original_rollback(self, dbapi_connection)
        ended_at.setdefault(id(dbapi_connection), (entered, time.perf_counter()))

    DefaultDialect.do_commit = do_commit  # type: ignore[method-assign]
    DefaultDialect.do_rollback = do_rollback  # type: ignore[method-assign]

    def counted(execute: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            with COUNTERS.lock:
                COUNTERS.statements += 1
            return execute(*args, **kwargs)

        return call

    for name in ("do_execute", "do_executemany", "do_execute_no_params"):
        setattr(DefaultDialect, name, counted(getattr(DefaultDialect, name)))

    @asynccontextmanager
    async def write(self: Any, *args: Any, **kwargs: Any) -> Any:
        holder: list[float | None] = [None]
        token = _lock_started.set(holder)
        started = time.perf_counter()
        ok = False
        dbapi_id = None
        try:
            async with original_write(self, *args, **kwargs) as conn:
                dbapi_id = id(await conn.get_raw_connection())  # what do_commit is handed
                ended_at.pop(dbapi_id, None)  # a read's reset-on-return, from before this block
                if self.is_sqlite:
                    holder[0] = time.perf_counter()  # BEGIN IMMEDIATE: SQLite's one write lock is held from here
                yield conn
            ok = True
        finally:
            ended = time.perf_counter()
            _lock_started.reset(token)
            commit_entered, lock_end = ended_at.pop(dbapi_id, (ended, ended)) if dbapi_id is not None else (ended, ended)
            with COUNTERS.lock:
                COUNTERS.write_s += ended - started
                if ok:
                    COUNTERS.writes_committed += 1
                else:
                    COUNTERS.writes_failed += 1
                if holder[0] is not None:
                    COUNTERS.lock_holds_s.append(max(0.0, lock_end - holder[0]))
                    COUNTERS.lock_commits_s.append(max(0.0, lock_end - max(commit_entered, holder[0])))

    original_statement = getattr(connection.Database, "statement", None)

    @asynccontextmanager
    async def statement(self: Any, *args: Any, **kwargs: Any) -> Any:
        # A group written as one statement, its own transaction (trees from 2026-12-05 on): a write
        # transaction, and its whole round trip counts as the batch lock's hold. That is more than
        # the server holds it (the inserts before the lock, the reply after the commit), and its
        # COMMIT, inside it, is not told apart.
        started = time.perf_counter()
        ok = False
        try:
            async with original_statement(self, *args, **kwargs) as conn:
                yield conn
            ok = True
        finally:
            spent = time.perf_counter() - started
            with COUNTERS.lock:
                COUNTERS.write_s += spent
                if ok:
                    COUNTERS.writes_committed += 1
                else:
                    COUNTERS.writes_failed += 1
                COUNTERS.lock_holds_s.append(spent)

    @asynccontextmanager
    async def read(self: Any, *args: Any, **kwargs: Any) -> Any:
        with COUNTERS.lock:
            COUNTERS.reads += 1
        async with original_read(self, *args, **kwargs) as conn:
            yield conn

    def marks_the_lock(lock: Any) -> Any:
        """``lock`` (a batch-row lock statement's method), noting when the transaction's first returned."""

        async def locked(self: Any, conn: Any, *args: Any, **kwargs: Any) -> Any:
            result = await lock(self, conn, *args, **kwargs)
            holder = _lock_started.get()
            if holder is not None and holder[0] is None:
                holder[0] = time.perf_counter()
            return result

        return locked

    connection.Database.write = write  # type: ignore[method-assign]
    if original_statement is not None:
        connection.Database.statement = statement  # type: ignore[method-assign]
    connection.Database.read = read  # type: ignore[method-assign]
    transactions.Transactions._lock_batch = marks_the_lock(original_lock)  # type: ignore[method-assign]
    if hasattr(transactions.Transactions, "_lock_and_count"):  # trees that lock the batch last (2026-12-03 on)
        transactions.Transactions._lock_and_count = marks_the_lock(transactions.Transactions._lock_and_count)

    def timed(fn: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.thread_time() - started
                with COUNTERS.lock:
                    COUNTERS.codec_cpu_s += spent

        return call

    pipeline.decode_image = timed(pipeline.decode_image)
    pipeline.encode_image = timed(pipeline.encode_image)


class PassthroughEngine:
    """The engine stand-in: each image comes back as it went in, with a minimal report."""

    device = "cpu"

    def __init__(self) -> None:
        from photoenhance.contracts.options import Quality
        from processor.engine.records import EnhanceResult

        self._result = EnhanceResult
        self.qualities = frozenset(Quality)

    async def enhance_batch_async(self, requests: Any) -> list[Any]:
        return [
            self._result(
                pixels=r.image.pixels,
                report={"quality": r.options.quality.value, "engine": "passthrough", "timings_ms": {}},
            )
            for r in requests
        ]

    def close(self) -> None:
        """Nothing to free."""


def _run_loop(main: Any, settings: Any) -> None:
    """Run ``main`` on the event loop the tree's services use (EVENT_LOOP), or asyncio's in a tree
    from before that setting, so the benchmark measures what ``photoenhance processor`` runs."""
    choice = getattr(settings, "event_loop", None)  # the tree's own Settings: None before EVENT_LOOP
    if choice is None:
        asyncio.run(main)
        return
    from photoenhance.event_loop import run

    run(main, choice)


def serve_engine(path: Path, kind: str) -> int:
    """The tree's engine process, serving the stand-in (or the real ``fast`` level) on ``path``."""
    import logging

    from photoenhance.contracts.options import Quality
    from photoenhance.settings import Settings
    from processor.engine_service.cli import serve

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    if kind == "passthrough":
        engine: Any = PassthroughEngine()
    else:
        from processor.engine import Engine

        engine = Engine.load(settings, qualities=[Quality.FAST])
    _run_loop(serve(engine, settings, str(path)), settings)
    engine.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--stats", type=Path, required=True, help="folder for the SIGUSR1 snapshots")
    parser.add_argument("--engine", choices=["passthrough", "fast"], default="passthrough")
    parser.add_argument("--serve-engine", type=Path, metavar="SOCKET",
                        help="be the engine process (photoenhance engine) on SOCKET instead of a worker")
    args = parser.parse_args()
    if args.serve_engine:
        return serve_engine(args.serve_engine, args.engine)

    import logging

    from photoenhance.settings import Settings
    from processor.worker import Worker

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    instrument()
    snapshots = [0]

    def dump(_signum: int, _frame: Any) -> None:
        snapshots[0] += 1
        path = args.stats / f"{args.worker_id}-{snapshots[0]}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(COUNTERS.snapshot()))
        os.replace(tmp, path)

    signal.signal(signal.SIGUSR1, dump)
    settings = Settings.from_env()
    # With ENGINE_SOCKET the worker connects to the engine process instead of holding an engine.
    engine = PassthroughEngine() if args.engine == "passthrough" and not getattr(settings, "engine_socket", "") else None
    worker = Worker(settings, engine=engine, worker_id=args.worker_id)
    profile_to = os.environ.get("CEILING_PROFILE")  # a cProfile of the whole run, for looking into it
    if profile_to:
        import cProfile

        cProfile.runctx("_run_loop(worker.run(), settings)", globals(), {"worker": worker, "settings": settings},
                        f"{profile_to}.{args.worker_id}")
    else:
        _run_loop(worker.run(), settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
