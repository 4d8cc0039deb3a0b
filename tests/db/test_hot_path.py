"""The worker's hot path: one write transaction before the work (``start_image``) and completions
committed together (``complete_image`` group commit), against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.exc import DBAPIError

from db.connection import Database
from db.models import Batch, Event
from db.records import ImageVersion
from db.repository import Repository, UnknownBatch
from db.statements import jsonb_can_hold
from db.worker_path import WorkerPath
from harness.db_load import race_versions_and_result_keys, race_with_start
from photoenhance.contracts.progress import EventType
from photoenhance.contracts.states import BatchState, ImageState

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def version(batch: str, name: str, etag: str = "e1", at: datetime = T0) -> ImageVersion:
    return ImageVersion(bucket="in", batch_id=batch, key=f"{batch}/{name}", name=name, etag=etag, size=10,
                        uploaded_at=at)


def keys(*candidates: str):  # noqa: ANN201 - a candidates_for callable
    return lambda _batch: list(candidates)


async def new_batch(repo: Repository, batch_id: str = "b1", expected: int | None = None) -> None:
    await repo.create_batch(batch_id, input_bucket="in", options={"quality": "fast"}, expected_count=expected)


class Commits:
    """Counts the write transactions committed on a repository's engine."""

    def __init__(self, repo: Repository) -> None:
        self.count = 0
        self._engine = repo.db.engine.sync_engine
        event.listen(self._engine, "commit", self._on_commit)

    def _on_commit(self, _conn: object) -> None:
        self.count += 1

    def close(self) -> None:
        event.remove(self._engine, "commit", self._on_commit)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_start_registers_claims_and_reserves_in_one_transaction(repository: Repository) -> None:
    await new_batch(repository)
    commits = Commits(repository)
    started = await repository.start_image(version("b1", "a.jpg"), "w1", 60, keys("b1/a.jpg"))
    commits.close()
    assert commits.count == 1
    assert started.claimed is not None and started.claimed.id == started.image.id
    assert started.image.state is ImageState.PROCESSING and started.image.lease_owner == "w1"
    assert started.image.attempts == 1 and started.output_key == "b1/a.jpg" == started.image.output_key
    assert started.batch.options == {"quality": "fast"}
    stored = await repository.get_image(started.image.id)
    assert stored == started.image
    batch = await repository.get_batch("b1")
    assert batch is not None and batch.total == 1 and batch.last_upload_at == T0


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_start_is_idempotent_by_version_and_respects_a_live_claim(repository: Repository) -> None:
    await new_batch(repository, expected=1)
    first = await repository.start_image(version("b1", "a.jpg"), "w1", 60, keys("b1/a.jpg"))
    again = await repository.start_image(version("b1", "a.jpg"), "w2", 60, keys("b1/a.jpg"))
    assert again.claimed is None and again.image.id == first.image.id and again.image.lease_owner == "w1"
    events = await repository.complete_image(first.image.id, "w1", output_key="b1/a.jpg")
    assert [e.type for e in events] == [EventType.IMAGE_COMPLETED, EventType.BATCH_COMPLETED]
    done = await repository.start_image(version("b1", "a.jpg"), "w2", 60, keys("b1/a.jpg"))
    assert done.claimed is None and done.image.state is ImageState.COMPLETED
    batch = await repository.get_batch("b1")
    assert batch is not None and (batch.total, batch.completed, batch.last_seq) == (1, 1, 2)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_start_claims_an_expired_lease_and_reserves_the_next_free_key(repository: Repository) -> None:
    now = [T0]
    repo = Repository(repository.db, clock=lambda: now[0])
    await new_batch(repo)
    holder = await repo.start_image(version("b1", "a.jpg"), "w1", 60, keys("b1/a.jpg"))
    assert holder.output_key == "b1/a.jpg"
    # a.png maps to a.jpg too: the second candidate is its own.
    other = await repo.start_image(version("b1", "a.png"), "w1", 60, keys("b1/a.jpg", "b1/a.png.jpg"))
    assert other.output_key == "b1/a.png.jpg"
    now[0] = T0 + timedelta(seconds=61)  # w1 crashed: its lease on a.jpg ran out
    taken = await repo.start_image(version("b1", "a.jpg"), "w2", 60, keys("b1/a.jpg"))
    assert taken.claimed is not None and taken.claimed.lease_owner == "w2" and taken.claimed.attempts == 2
    assert taken.output_key == "b1/a.jpg"
    # No free candidate: claimed, nothing reserved (the pipeline decides after the fetch).
    none_free = await repo.start_image(version("b1", "a.jpeg"), "w2", 60, keys("b1/a.jpg", "b1/a.png.jpg"))
    assert none_free.claimed is not None and none_free.output_key is None


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_start_supersedes_older_versions_and_records_late_ones_as_superseded(repository: Repository) -> None:
    await new_batch(repository)
    old = await repository.start_image(version("b1", "a.jpg", "e1", T0), "w1", 60, keys("b1/a.jpg"))
    await repository.complete_image(old.image.id, "w1", output_key="b1/a.jpg")
    new = await repository.start_image(version("b1", "a.jpg", "e2", T0 + timedelta(seconds=5)), "w1", 60,
                                       keys("b1/a.jpg"))
    assert new.claimed is not None and new.output_key == "b1/a.jpg"  # same key: versions share it
    assert (await repository.get_image(old.image.id)).state is ImageState.SUPERSEDED
    batch = await repository.get_batch("b1")
    assert batch is not None and (batch.total, batch.completed) == (1, 0)
    late = await repository.start_image(version("b1", "a.jpg", "e0", T0 - timedelta(seconds=5)), "w1", 60,
                                        keys("b1/a.jpg"))
    assert late.claimed is None and late.image.state is ImageState.SUPERSEDED


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_start_into_an_unknown_batch_refuses(repository: Repository) -> None:
    with pytest.raises(UnknownBatch):
        await repository.start_image(version("nope", "a.jpg"), "w1", 60, keys("nope/a.jpg"))


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_concurrent_completions_share_a_transaction_and_keep_seq_gapless(repository: Repository) -> None:
    await new_batch(repository, "b1", expected=12)
    await new_batch(repository, "b2", expected=12)
    started = [
        await repository.start_image(version(b, f"{n:02d}.jpg"), "w1", 60, keys(f"{b}/{n:02d}.jpg"))
        for n in range(12) for b in ("b1", "b2")
    ]
    lost = started[4]  # one of b1's (n outer, batch inner)
    await repository.release_image(lost.image.id, "w1")  # its completion must count nothing
    commits = Commits(repository)
    results = await asyncio.gather(
        *(repository.complete_image(s.image.id, "w1", output_key=s.output_key or "") for s in started),
        repository.complete_image(10**9, "w1", output_key="x"),
        return_exceptions=True,
    )
    commits.close()
    assert commits.count < len(started) / 2, "completions arriving together are committed together"
    assert isinstance(results[-1], LookupError)  # only the unknown image's caller gets it
    assert results[4] == []
    for batch_id in ("b1", "b2"):
        events = await repository.events_since(batch_id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        completions = [e for e in events if e.type is EventType.IMAGE_COMPLETED]
        assert [e.counts.completed for e in completions] == list(range(1, len(completions) + 1))
        assert len({e.image.name for e in completions}) == len(completions)
    b2 = await repository.get_batch("b2")
    assert b2 is not None and b2.completed == 12 and b2.state is BatchState.COMPLETED
    b2_events = await repository.events_since("b2")
    assert b2_events[-1].type is EventType.BATCH_COMPLETED and len(b2_events) == 13
    # The caller whose completion finished b2 got the batch's event with its own.
    assert any(isinstance(r, list) and len(r) == 2 and r[1].type is EventType.BATCH_COMPLETED for r in results)
    b1 = await repository.get_batch("b1")
    assert b1 is not None and b1.completed == 11 and b1.state is BatchState.OPEN


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_the_events_logged_are_the_events_returned(repository: Repository) -> None:
    # On PostgreSQL the statement that locks the batch numbers and counts the events it logs;
    # the caller builds its own from the batch that statement returns. Both must be the same
    # events, with every count (the expected one, a failure, other completions before them).
    await new_batch(repository, "b1", expected=9)
    started = [await repository.start_image(version("b1", f"{n}.jpg"), "w1", 60, keys(f"b1/{n}.jpg")) for n in range(6)]
    await repository.fail_image(started[0].image.id, reason="bad", code="not_an_image", owner="w1")
    await repository.complete_image(started[1].image.id, "w1", output_key="b1/1.jpg", batch_id="b1")
    returned = await asyncio.gather(*(
        repository.complete_image(s.image.id, "w1", output_key=f"b1/{n}.jpg", batch_id="b1")
        for n, s in enumerate(started[2:], start=2)
    ))
    events = [e for r in returned for e in r]
    assert [e.seq for e in events] == [3, 4, 5, 6]
    assert [e.counts.completed for e in events] == [2, 3, 4, 5]
    assert {(e.counts.total, e.counts.failed, e.counts.expected, e.counts.cancelled) for e in events} == {(6, 1, 9, 0)}
    assert await repository.events_since("b1", 2) == events
    async with repository.db.read() as conn:
        payloads = (await conn.execute(select(Event.payload).where(Event.batch_id == "b1", Event.seq > 2)
                                       .order_by(Event.seq))).scalars().all()
    assert payloads == [e.to_dict() for e in events]  # the stored form exactly, no more and no less


def test_what_jsonb_cannot_hold_is_found_anywhere_in_a_payload() -> None:
    assert jsonb_can_hold({"name": "ok 😀 é", "report": {"n": [1, 2.5, None, True]}})  # a surrogate pair is fine
    assert not jsonb_can_hold({"report": {"colour": ["x", "nul\x00"]}})
    assert not jsonb_can_hold([{"a": "lone \udc80"}])
    assert not jsonb_can_hold({"\ud800": 1})


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_completions_whose_reports_jsonb_refuses_complete_with_the_rest(repository: Repository) -> None:
    # A report carries text from the upload (a colour profile's name). PostgreSQL's jsonb refuses
    # NUL and lone surrogates, which the json column holds; the statement that logs the events
    # on PostgreSQL goes through jsonb, so such a group logs them after. None may fail, nor the
    # plain completions grouped with them.
    await new_batch(repository, "b1")
    texts = ["plain", "nul\x00inside", "lone \ud800 surrogate", "also plain"]
    started = [await repository.start_image(version("b1", f"{n}.jpg"), "w1", 60, keys(f"b1/{n}.jpg"))
               for n in range(len(texts))]
    returned = await asyncio.gather(*(
        repository.complete_image(s.image.id, "w1", output_key=f"b1/{n}.jpg", report={"colour": text}, batch_id="b1")
        for n, (s, text) in enumerate(zip(started, texts))
    ))
    events = sorted((e for r in returned for e in r), key=lambda e: e.seq)
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert sorted(e.image.report["colour"] for e in events) == sorted(texts)
    assert await repository.events_since("b1", 0) == events


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_start_and_grouped_completions_from_several_processes(database_url: str, repository: Repository) -> None:
    names = [f"img-{n:03d}.jpg" for n in range(40)]
    for batch_id in ("ra", "rb"):
        await new_batch(repository, batch_id, expected=len(names))
    with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(race_with_start, database_url, ["ra", "rb"], names, f"w{n}", n) for n in range(3)]
        results = [f.result(timeout=600) for f in futures]
    assert sum(r["claimed"] for r in results) == 2 * len(names)
    assert sum(r["completed"] for r in results) == 2 * len(names)
    for batch_id in ("ra", "rb"):
        batch = await repository.get_batch(batch_id)
        assert batch is not None and (batch.total, batch.completed, batch.state) == (40, 40, BatchState.COMPLETED)
        events = await repository.events_since(batch_id)
        assert [e.seq for e in events] == list(range(1, 42)), "sequence numbers must be gapless"
        assert [e.counts.completed for e in events[:-1]] == list(range(1, 41))
        assert events[-1].type is EventType.BATCH_COMPLETED


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_completion_naming_another_batch_counts_nothing(repository: Repository) -> None:
    await new_batch(repository, "b1")
    await new_batch(repository, "b2")
    started = await repository.start_image(version("b1", "a.jpg"), "w1", 60, keys("b1/a.jpg"))
    assert await repository.complete_image(started.image.id, "w1", output_key="b1/a.jpg", batch_id="b2") == []
    assert (await repository.get_image(started.image.id)).state is ImageState.PROCESSING
    assert await repository.events_since("b2") == [] and await repository.events_since("b1") == []
    events = await repository.complete_image(started.image.id, "w1", output_key="b1/a.jpg", batch_id="b1")
    assert [(e.batch_id, e.seq, e.type) for e in events] == [("b1", 1, EventType.IMAGE_COMPLETED)]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_concurrent_starts_share_a_transaction_and_see_each_other(repository: Repository) -> None:
    await new_batch(repository, "b1")
    await new_batch(repository, "b2")
    commits = Commits(repository)
    started = await asyncio.gather(
        repository.start_image(version("b1", "a.jpg"), "w1", 60, keys("b1/a.jpg")),
        repository.start_image(version("b1", "a.png"), "w1", 60, keys("b1/a.jpg", "b1/a.png.jpg")),
        repository.start_image(version("b1", "a.jpg"), "w2", 60, keys("b1/a.jpg")),  # a duplicate: held
        repository.start_image(version("b2", "a.jpg", at=T0 + timedelta(seconds=3)), "w1", 60, keys("b2/a.jpg")),
        repository.start_image(version("b2", "b.jpg", at=T0 + timedelta(seconds=1)), "w1", 60, keys("b2/b.jpg")),
        repository.start_image(version("nope", "a.jpg"), "w1", 60, keys("nope/a.jpg")),
        return_exceptions=True,
    )
    commits.close()
    assert commits.count < 4, "starts arriving together are committed together"
    assert [s.output_key for s in started[:2]] == ["b1/a.jpg", "b1/a.png.jpg"]  # the second saw the first
    assert started[2].claimed is None and started[2].image.id == started[0].image.id
    assert isinstance(started[5], UnknownBatch)  # only that caller's
    b1, b2 = await repository.get_batch("b1"), await repository.get_batch("b2")
    assert b1 is not None and b1.total == 2
    assert b2 is not None and b2.total == 2 and b2.last_upload_at == T0 + timedelta(seconds=3)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_starts_and_completions_arriving_together_share_one_transaction(repository: Repository) -> None:
    # A prefetch window's steady state: the next images start while earlier ones complete.
    await new_batch(repository, "b1", expected=4)
    first = [await repository.start_image(version("b1", f"{n}.jpg"), "w1", 60, keys(f"b1/{n}.jpg")) for n in (0, 1)]
    await repository.start_image(version("b1", "old.jpg", etag="e0"), "w1", 60, keys("b1/old.jpg"))
    [done_old] = await repository.complete_image((await repository.find_image("in", "b1/old.jpg", "e0")).id, "w1",
                                                 output_key="b1/old.jpg")
    assert done_old.counts.completed == 1
    commits = Commits(repository)
    results = await asyncio.gather(
        *(repository.complete_image(s.image.id, "w1", output_key=s.output_key or "") for s in first),
        repository.start_image(version("b1", "2.jpg"), "w1", 60, keys("b1/2.jpg")),
        # A new version of old.jpg: its completed result is taken back before the completions count.
        repository.start_image(version("b1", "old.jpg", etag="e1", at=T0 + timedelta(seconds=5)), "w1", 60,
                               keys("b1/old.jpg")),
        repository.start_image(version("nope", "a.jpg"), "w1", 60, keys("nope/a.jpg")),
        return_exceptions=True,
    )
    commits.close()
    assert commits.count == 1, "starts and completions queued together are one transaction"
    first_done, second_done, third, renewed, unknown = results
    assert isinstance(unknown, UnknownBatch)
    assert third.claimed is not None and renewed.claimed is not None
    # The completions counted from the batch as the starts left it: old.jpg's result taken back.
    assert [e.counts.completed for e in (*first_done, *second_done)] == [1, 2]
    assert [e.seq for e in (*first_done, *second_done)] == [2, 3]
    assert all(e.counts.total == 4 for e in (*first_done, *second_done))
    batch = await repository.get_batch("b1")
    assert batch is not None and (batch.total, batch.completed, batch.state) == (4, 2, BatchState.OPEN)
    events = await repository.events_since("b1")
    assert [e.seq for e in events] == [1, 2, 3]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_racing_versions_of_a_key_and_inputs_sharing_a_result_key(database_url: str, repository: Repository) -> None:
    # Four processes start at once their own version of each "same-N" key (a key uploaded again
    # while being started elsewhere) and their own key whose one result key all of them want;
    # five waves of ten keys each. The batch is locked last on the common path: what one found
    # unlocked must still hold once it is locked, which the unique indexes of migration 0007 see
    # to. (With neither those nor a re-read under the lock this fails: 2026-12-04, without the
    # indexes, twenty keys had four current versions each.)
    await new_batch(repository, "rv")
    keys, waves = 10, 5
    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
        start_at = time.time() + 8  # after the four processes have spawned and connected
        futures = [pool.submit(race_versions_and_result_keys, database_url, "rv", keys, f"w{n}", n, start_at, waves)
                   for n in range(4)]
        starts = [s for f in futures for s in f.result(timeout=600)["starts"]]
    names = keys * waves
    images = (await repository.batch_snapshot("rv")).images
    current = [i for i in images if i.state is not ImageState.SUPERSEDED]
    by_key: dict[str, int] = {}
    for image in current:
        by_key[image.key] = by_key.get(image.key, 0) + 1
    assert all(count == 1 for count in by_key.values()), f"one current version per key: {by_key}"
    assert len([k for k in by_key if "/same-" in k]) == names
    holders = [i.output_key for i in current if i.output_key is not None]
    assert len(holders) == len(set(holders)), "no result key is held by two inputs"
    assert sum(1 for i in current if i.output_key and "/shared-" in i.output_key) == names  # one winner each
    claimed_keys = [(key, out) for key, _id, claimed, out in starts if claimed and out is not None]
    assert len({out for _key, out in claimed_keys if "/shared-" in out}) == names
    batch = await repository.get_batch("rv")
    assert batch is not None and batch.total == names + 4 * names  # one per key, new versions do not add


class Statements:
    """The statements a repository's engine runs, in order, with its commits marked."""

    def __init__(self, repo: Repository) -> None:
        self.seen: list[str] = []
        self._engine = repo.db.engine.sync_engine
        event.listen(self._engine, "before_cursor_execute", self._on_execute)
        event.listen(self._engine, "commit", self._on_commit)

    def _on_execute(self, _conn: object, _cursor: object, statement: str, *_args: object) -> None:
        self.seen.append(" ".join(statement.split()))

    def _on_commit(self, _conn: object) -> None:
        self.seen.append("COMMIT")

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._on_execute)
        event.remove(self._engine, "commit", self._on_commit)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_the_batch_is_locked_for_the_last_statements_only(repository: Repository, database_url: str) -> None:
    # A prefetch window's steady state: one image starts while another completes. Everything
    # that can be done before the batch is locked is. On PostgreSQL the statement that locks the
    # batch logs the events too, and only the commit follows it; on SQLite (whose write lock is
    # taken at BEGIN) the events follow the batch's update.
    await new_batch(repository, "b1")
    first = await repository.start_image(version("b1", "0.jpg"), "w1", 60, keys("b1/0.jpg"))
    statements = Statements(repository)
    done, started = await asyncio.gather(
        repository.complete_image(first.image.id, "w1", output_key="b1/0.jpg", batch_id="b1"),
        repository.start_image(version("b1", "1.jpg"), "w1", 60, keys("b1/1.jpg")),
    )
    statements.close()
    assert [e.seq for e in done] == [1] and started.claimed is not None and started.output_key == "b1/1.jpg"
    seen = statements.seen[: statements.seen.index("COMMIT") + 1]
    locking = ("UPDATE batches", "WITH counted AS (UPDATE batches")
    locks = [n for n, s in enumerate(seen) if s.startswith(locking) or s.endswith("FOR UPDATE")]
    assert locks, seen
    if database_url.startswith("sqlite"):
        assert seen[locks[0]].startswith("UPDATE batches SET"), seen
        assert [" ".join(s.split()[:3]) for s in seen[locks[0] + 1 : -1]] == ["INSERT INTO events"], seen
    else:
        assert seen[locks[0]].startswith("WITH counted AS (UPDATE batches SET"), seen
        assert "INSERT INTO events" in seen[locks[0]] and locks[0] == len(seen) - 2, seen


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_batch_remembered_open_is_checked_again_once_locked(database_url: str, repository: Repository) -> None:
    # This process remembers b1 open (its start decides from that before locking); another
    # process then cancels it, and changes b2's options so that its keys move. Both starts find
    # the batch otherwise under the lock and are done as the batch stands: nothing processed
    # in the cancelled batch, b2's key reserved from its new options.
    await new_batch(repository, "b1")
    await new_batch(repository, "b2")
    await repository.start_image(version("b1", "a.jpg"), "w1", 60, keys("b1/a.jpg"))
    await repository.start_image(version("b2", "a.jpg"), "w1", 60, keys("b2/a.jpg"))
    other = Database(database_url)
    try:
        assert (await Repository(other).cancel_batch("b1")).cancelled == 0
        async with other.write() as conn:
            await conn.execute(update(Batch).where(Batch.id == "b2").values(options={"quality": "fast", "format": "png"}))
    finally:
        await other.dispose()
    statements = Statements(repository)
    late = await repository.start_image(version("b1", "b.jpg"), "w1", 60, keys("b1/b.jpg"))
    assert late.claimed is None and late.image.state is ImageState.SUPERSEDED and late.image.code == "cancelled"
    b1 = await repository.get_batch("b1")
    assert b1 is not None and b1.total == 1 and b1.state is BatchState.CANCELLING

    def by_format(batch) -> list[str]:  # noqa: ANN001 - a candidates_for callable
        return [f"b2/b.{(batch.options or {}).get('format', 'jpg')}"]

    started = await repository.start_image(version("b2", "b.jpg"), "w1", 60, by_format)
    statements.close()
    assert started.claimed is not None and started.output_key == "b2/b.png"
    assert started.batch.options == {"quality": "fast", "format": "png"}
    if not database_url.startswith("sqlite"):
        # Each start was tried as its group's one statement, which refused itself, then done the
        # general way: one committed transaction each.
        seen = statements.seen
        assert sum(s.startswith("WITH inserted AS") for s in seen) == 2 and seen.count("COMMIT") == 2, seen


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_lock_last_group_that_loses_a_lock_race_is_done_locked_first(repository: Repository, monkeypatch) -> None:
    # The one deadlock the lock-last path allows (its unlocked inserts against another
    # transaction's locks) is raised here once, as PostgreSQL reports it: the group must not be
    # retried lock-last (groups racing on the same keys can keep colliding: CI once saw all eight
    # attempts lost) but done again with its batch locked first, and succeed.
    real = WorkerPath._lock_last
    calls: list[int] = []

    async def deadlocked_once(self, conn, items, starts, completions):
        calls.append(len(items))
        if len(calls) == 1:
            raise DBAPIError("INSERT INTO images ...", None, Exception("deadlock detected"))
        return await real(self, conn, items, starts, completions)

    monkeypatch.setattr(WorkerPath, "_lock_last", deadlocked_once)
    await new_batch(repository, "b1")
    started = await repository.start_image(version("b1", "a.jpg"), "w1", 60, keys("b1/a.jpg"))
    assert calls == [1], "lock-last is tried once; the lost race goes to the locked-first path"
    assert started.claimed is not None and started.output_key == "b1/a.jpg"
    stored = await repository.get_image(started.image.id)
    assert (stored.state, stored.lease_owner, stored.output_key) == (ImageState.PROCESSING, "w1", "b1/a.jpg")
    batch = await repository.get_batch("b1")
    assert batch is not None and batch.total == 1


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_new_keys_starting_together_are_inserted_by_one_statement(repository: Repository, database_url: str) -> None:
    # Starts of keys never seen are the common case: the database's unique indexes decide
    # whether each is free, so no image row is read and one multi-row insert writes them all
    # (on PostgreSQL inside the group's one statement, its own transaction: no COMMIT follows).
    # One whose result key turns out held (a.png wants a.jpg's) is still given its own.
    await new_batch(repository, "b1")
    await repository.start_image(version("b1", "0.jpg"), "w1", 60, keys("b1/0.jpg"))  # b1 remembered
    statements = Statements(repository)
    started = await asyncio.gather(
        *(repository.start_image(version("b1", f"{n}.jpg"), "w1", 60, keys(f"b1/{n}.jpg")) for n in range(1, 5))
    )
    statements.close()
    assert [s.output_key for s in started] == [f"b1/{n}.jpg" for n in range(1, 5)]
    assert all(s.claimed is not None and s.claimed.lease_owner == "w1" for s in started)
    seen = statements.seen
    if database_url.startswith("sqlite"):
        assert seen.count("COMMIT") == 1, seen
        assert sum(s.startswith("INSERT INTO images") for s in seen) == 1, seen
        assert not [s for s in seen if s.startswith("SELECT") and "FROM images" in s], seen
    else:
        assert len(seen) == 1 and seen[0].startswith("WITH inserted AS (INSERT INTO images"), seen
    held = await repository.start_image(version("b1", "1.png"), "w1", 60, keys("b1/1.jpg", "b1/1.png.jpg"))
    assert held.claimed is not None and held.output_key == "b1/1.png.jpg"
    batch = await repository.get_batch("b1")
    assert batch is not None and batch.total == 6
