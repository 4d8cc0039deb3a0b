"""A full disk under the worker's SQLite database and TMPDIR.

While the disk is full every commit fails with SQLITE_FULL ("database or disk is full"). What
this proves, with a real worker process on a real tmpfs:

- the failure is classified as transient with the code ``disk_full`` (not a permanent image
  failure, not an unreachable database), and the worker stays up and healthy throughout;
- nothing is acknowledged without its outcome being recorded: with the reconciler off, an image
  whose message had been acknowledged unrecorded could never complete afterwards;
- no failure is recorded for the images, and once the filler is deleted every image completes
  exactly once.

The disk stays full for a few seconds, well inside the worker's retry budget (see
:data:`RETRIES`). A full disk that outlasts the budget is the case
``test_disk_full_longer_than_the_retry_budget_fails_nothing`` shows: today its images end as
failed (``delivery_limit``), see that test's docstring.
"""

from __future__ import annotations

import asyncio
import errno
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from db.connection import Database
from db.migrate import upgrade
from db.repository import Repository
from harness.processor import ProgressRecorder, WorkerProcess, eventually
from photoenhance.settings import Settings
from processor.failures import Verdict, classify
from tests.reliability.exactly_once import assert_exactly_once, metric, metric_at_least, upload_batch
from tests.reliability.resources import MiB, TmpfsUnavailable, fill, free_bytes, tmpfs

pytestmark = [pytest.mark.reliability]

#: Size of the tmpfs: room for the migrated database (~60 KiB) and the WAL of the warm-up image;
#: the rest is filled.
TMPFS_BYTES = 8 * MiB
IMAGES = 12
#: Back-off of the worker in the main test: 200 ms doubling to 2 s, 10 attempts, i.e. ~13 s of
#: retrying before an image is given up; the disk stays full for about a third of that.
RETRIES = {"retry_base_delay_ms": 200, "retry_max_delay_ms": 2000, "retry_max_attempts": 10}
#: How long the disk stays full after every image has failed on it at least once.
FULL_FOR_S = 4.0


# -- classification (no services) ------------------------------------------------------------------
def _real_sqlite_full() -> OperationalError:
    """SQLAlchemy's wrapper around a genuine SQLITE_FULL (a database capped at a few pages)."""
    engine = create_engine("sqlite://")
    try:
        with engine.begin() as conn:
            conn.execute(text("PRAGMA max_page_count = 2"))
            conn.execute(text("CREATE TABLE t (x BLOB)"))
            conn.execute(text("INSERT INTO t VALUES (zeroblob(100000))"))
    except OperationalError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("SQLite accepted a row larger than its page cap")


def _wrapped(outer: Exception, inner: BaseException) -> Exception:
    outer.__cause__ = inner
    return outer


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(_real_sqlite_full, id="sqlite-full-via-sqlalchemy"),
        pytest.param(lambda: OSError(errno.ENOSPC, "No space left on device"), id="enospc"),
        pytest.param(lambda: OSError(errno.EDQUOT, "Disk quota exceeded"), id="edquot"),
        pytest.param(lambda: asyncpg.exceptions.DiskFullError("could not extend file"), id="postgres-disk-full"),
        pytest.param(
            lambda: _wrapped(RuntimeError("commit failed"), asyncpg.exceptions.DiskFullError("no space")),
            id="postgres-disk-full-as-cause",
        ),
    ],
)
def test_a_full_disk_is_transient_with_its_own_code(make: Callable[[], Exception]) -> None:
    exc = make()
    if isinstance(exc, OperationalError):
        assert "database or disk is full" in str(exc)
    failure = classify(exc)
    assert (failure.verdict, failure.code) == (Verdict.TRANSIENT, "disk_full")


def test_other_database_and_io_errors_keep_their_codes() -> None:
    refused = OperationalError("SELECT 1", {}, Exception("connection refused"))
    assert classify(refused).code == "database_unavailable"
    assert classify(ConnectionResetError(errno.ECONNRESET, "reset")).code == "io_error"


# -- a real worker on a full tmpfs -------------------------------------------------------------------
@pytest.fixture
def tight_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of :data:`TMPFS_BYTES` (skipped where the tests may not mount one)."""
    try:
        with tmpfs(tmp_path / "tight", TMPFS_BYTES) as where:
            yield where
    except TmpfsUnavailable as exc:
        pytest.skip(f"no tmpfs for the full-disk test: {exc}")


@pytest.fixture
async def tight_database(tight_disk: Path) -> AsyncIterator[tuple[str, Repository]]:
    """A migrated SQLite database on the tmpfs: its URL, and the test's repository over it."""
    url = f"sqlite+aiosqlite:///{tight_disk / 'photoenhance.db'}"
    db = Database(url)
    await upgrade(db)
    try:
        yield url, Repository(db)
    finally:
        await db.dispose()


async def _worker_on_full_disk(
    settings: Settings, tight_disk: Path, repository: Repository,
    worker_processes: Callable[..., WorkerProcess], monkeypatch: pytest.MonkeyPatch,
) -> tuple[WorkerProcess, Path]:
    """A healthy worker whose database and TMPDIR are on the tmpfs, which is then filled; returns
    the worker and the filler file."""
    temp = tight_disk / "tmp"
    temp.mkdir()
    with monkeypatch.context() as env:
        env.setenv("TMPDIR", str(temp))  # WorkerProcess hands the test's environment on
        worker = worker_processes(settings, "cramped")
    await asyncio.to_thread(worker.wait_healthy)
    # One image first, so the worker has its connections and the WAL index open before the disk
    # fills (a real disk fills under a running worker).
    warm = await upload_batch(settings, "warm", 1)
    await assert_exactly_once(repository, settings, "warm", warm)
    _truncate_wal(tight_disk / "photoenhance.db")  # so the very next commit has to grow the WAL
    filler = tight_disk / "filler"
    fill(filler)
    assert free_bytes(tight_disk) == 0
    return worker, filler


async def _keep_full_and_watch(worker: WorkerProcess, repository: Repository, batch_id: str, seconds: float) -> None:
    """Hold the disk full for ``seconds``: the worker must stay healthy, and no image of the batch
    may reach a final state (nothing can be recorded, so nothing may be settled)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = worker.health()
        assert status is not None and status["ok"], f"the worker must stay up on a full disk: {status}\n{worker.log()}"
        batch = await repository.get_batch(batch_id)
        assert batch is None or batch.completed + batch.failed == 0, "nothing can be recorded on a full disk"
        await asyncio.sleep(0.5)


@pytest.mark.objectstore
async def test_full_disk_under_sqlite_and_tmpdir_loses_nothing_and_fails_nothing(
    processor_settings: Settings, tight_disk: Path, tight_database: tuple[str, Repository],
    worker_processes: Callable[..., WorkerProcess], monkeypatch: pytest.MonkeyPatch, progress: ProgressRecorder,
    record_property: Callable[[str, object], None],
) -> None:
    """Images uploaded onto a full disk wait (retried as ``disk_full``) and all complete exactly
    once after space is freed; none is failed, none is doubled."""
    url, repository = tight_database
    settings = processor_settings.replace(database_url=url, **RETRIES)
    worker, filler = await _worker_on_full_disk(settings, tight_disk, repository, worker_processes, monkeypatch)

    sources = await upload_batch(settings, "full", IMAGES)
    await eventually(
        lambda: metric_at_least(worker, IMAGES, "photoenhance_retries_total", reason="disk_full"),
        what="every image to be retried as disk_full",
    )
    await _keep_full_and_watch(worker, repository, "full", FULL_FOR_S)
    record_property("disk_full_retries", metric(worker.metrics(), "photoenhance_retries_total", reason="disk_full"))

    filler.unlink()
    await assert_exactly_once(repository, settings, "full", sources, recorder=progress)
    metrics = worker.metrics()
    assert metric(metrics, "photoenhance_images_failed_total") == 0
    assert metric(metrics, "photoenhance_retries_total", reason="database_unavailable") == 0, (
        "a full disk is not reported as an unreachable database"
    )
    assert worker.process.poll() is None
    assert worker.terminate() == 0, worker.log()


def _truncate_wal(path: Path) -> None:
    with sqlite3.connect(path, timeout=30) as conn:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0, "the WAL could not be truncated"
    assert path.with_name(path.name + "-wal").stat().st_size == 0


@pytest.mark.objectstore
async def test_disk_full_longer_than_the_retry_budget_fails_nothing(
    processor_settings: Settings, tight_disk: Path, tight_database: tuple[str, Repository],
    worker_processes: Callable[..., WorkerProcess], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same full disk, outlasting a short retry budget (3 attempts: 0.6 s).

    The disk is the worker's condition, not the image's: ``disk_full`` is an outage that spends
    none of ``RETRY_MAX_ATTEMPTS``, so the images wait until space returns. (When it counted, each
    image's retries ran out, the failure could not be recorded on the full disk, and the quorum
    queue's delivery limit ended it as ``delivery_limit`` once space was back.)
    """
    url, repository = tight_database
    settings = processor_settings.replace(
        database_url=url, retry_base_delay_ms=200, retry_max_delay_ms=1000, retry_max_attempts=3
    )
    worker, filler = await _worker_on_full_disk(settings, tight_disk, repository, worker_processes, monkeypatch)
    sources = await upload_batch(settings, "full", IMAGES)
    await eventually(
        lambda: metric_at_least(worker, IMAGES, "photoenhance_retries_total", reason="disk_full"),
        what="every image to be retried as disk_full",
    )
    # Long enough for many times the budget, and for AMQP_DELIVERY_LIMIT (5) requeues 1 s apart.
    await _keep_full_and_watch(worker, repository, "full", 12.0)
    filler.unlink()
    await assert_exactly_once(repository, settings, "full", sources)
    assert worker.terminate() == 0, worker.log()
