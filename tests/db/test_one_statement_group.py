"""PostgreSQL: a group of the worker's path, all of one batch, written as one statement in a
transaction of its own (``db.statements.WRITE_GROUP``), and every case it refuses, done again the
general way with nothing of the refused statement left behind."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import DBAPIError

from db.models import Event, Image
from db.repository import Repository
from db.transactions import is_lock_race, is_refusal
from photoenhance.contracts.progress import EventType, ProgressEvent
from photoenhance.contracts.states import BatchState, ImageState
from tests.db.test_hot_path import keys, new_batch, version

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


class Seen:
    """The statements a repository's engine runs, the transactions it commits and the groups it
    writes as one statement, and how each of those ended."""

    def __init__(self, repo: Repository) -> None:
        self.statements: list[str] = []
        self.commits = 0
        self._engine = repo.db.engine.sync_engine
        event.listen(self._engine, "before_cursor_execute", self._on_execute)
        event.listen(self._engine, "commit", self._on_commit)

    def _on_execute(self, _conn: object, _cursor: object, statement: str, *_args: object) -> None:
        self.statements.append(" ".join(statement.split())[:40])

    def _on_commit(self, _conn: object) -> None:
        self.commits += 1

    @property
    def groups(self) -> int:
        return sum(s.startswith("WITH inserted AS") for s in self.statements)

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._on_execute)
        event.remove(self._engine, "commit", self._on_commit)


async def logged(repo: Repository, batch_id: str) -> list[ProgressEvent]:
    async with repo.db.read() as conn:
        rows = (await conn.execute(select(Event.payload).where(Event.batch_id == batch_id).order_by(Event.seq))).all()
    return [ProgressEvent.from_dict(payload) for (payload,) in rows]


async def images_of(repo: Repository, batch_id: str) -> list[tuple[str, str, int]]:
    async with repo.db.read() as conn:
        rows = (await conn.execute(
            select(Image.key, Image.state, Image.attempts).where(Image.batch_id == batch_id).order_by(Image.id)
        )).all()
    return [tuple(row) for row in rows]


async def test_the_refusing_function_aborts_its_statement_with_its_own_sqlstate(repository: Repository) -> None:
    # Migration 0008's function: true passes; false and NULL abort the statement, which undoes
    # what it did, with the SQLSTATE the worker's path tells from every other failure.
    await new_batch(repository, "b1")
    async with repository.db.read() as conn:
        assert (await conn.execute(text("SELECT photoenhance_refuse_unless(true, 'x')"))).scalar_one() is True
    for ok in ("false", "NULL"):
        with pytest.raises(DBAPIError) as refused:
            async with repository.db.statement() as conn:
                await conn.execute(text(
                    "WITH moved AS (UPDATE batches SET total = 99 WHERE id = 'b1' RETURNING id) "
                    f"SELECT photoenhance_refuse_unless({ok}, 'because') FROM moved"
                ))
        assert is_refusal(refused.value) and not is_lock_race(refused.value)
        assert "refused: because" in str(refused.value.orig)
    batch = await repository.get_batch("b1")
    assert batch is not None and batch.total == 0


async def test_a_start_and_a_completion_of_one_batch_are_one_statement_and_no_commit(repository: Repository) -> None:
    # A prefetch window's steady state: one image completes while the next starts. The whole
    # group is one statement, committed by the server as it ends (no BEGIN, no COMMIT from the
    # worker); the event it logged is the one the worker returns, numbered and counted.
    await new_batch(repository, "b1", expected=2)
    first = await repository.start_image(version("b1", "0.jpg"), "w1", 60, keys("b1/0.jpg"))  # b1 remembered
    seen = Seen(repository)
    done, started = await asyncio.gather(
        repository.complete_image(first.image.id, "w1", output_key="b1/0.jpg", report={"faces": 2},
                                  batch_id="b1", name="0.jpg"),
        repository.start_image(version("b1", "1.jpg"), "w1", 60, keys("b1/1.jpg")),
    )
    seen.close()
    assert seen.statements and all(s.startswith("WITH inserted AS") for s in seen.statements), seen.statements
    assert seen.groups == 1 and seen.commits == 0
    assert started.claimed is not None and started.output_key == "b1/1.jpg" and started.claimed.lease_owner == "w1"
    assert (started.batch.total, started.batch.completed, started.batch.last_seq) == (2, 0, 0)
    assert [(e.seq, e.type, e.counts.completed, e.counts.total, e.counts.expected) for e in done] == [
        (1, EventType.IMAGE_COMPLETED, 1, 2, 2)
    ]
    assert done[0].image is not None and done[0].image.report == {"faces": 2} and done[0].image.name == "0.jpg"
    assert await logged(repository, "b1") == done
    stored = await repository.get_image(first.image.id)
    assert (stored.state, stored.output_key, stored.report, stored.lease_owner) == (
        ImageState.COMPLETED, "b1/0.jpg", {"faces": 2}, None)
    batch = await repository.get_batch("b1")
    assert batch is not None and (batch.total, batch.completed, batch.last_seq, batch.state) == (2, 1, 1, BatchState.OPEN)


async def test_a_lost_claim_refuses_the_group_which_is_done_again_with_nothing_left_twice(repository: Repository) -> None:
    # The completion names an owner that no longer holds the image: the statement refuses the
    # whole group (its start's insert undone with it); the general way then starts the key once
    # and counts nothing for the lost claim.
    await new_batch(repository, "b1")
    first = await repository.start_image(version("b1", "0.jpg"), "w1", 60, keys("b1/0.jpg"))
    seen = Seen(repository)
    lost, started = await asyncio.gather(
        repository.complete_image(first.image.id, "w2", output_key="b1/0.jpg", batch_id="b1", name="0.jpg"),
        repository.start_image(version("b1", "1.jpg"), "w1", 60, keys("b1/1.jpg")),
    )
    seen.close()
    assert seen.groups == 1 and seen.commits == 1, "refused, then one transaction the general way"
    assert lost == [] and started.claimed is not None and started.output_key == "b1/1.jpg"
    assert await images_of(repository, "b1") == [
        ("b1/0.jpg", ImageState.PROCESSING.value, 1), ("b1/1.jpg", ImageState.PROCESSING.value, 1)]
    assert await logged(repository, "b1") == []
    batch = await repository.get_batch("b1")
    assert batch is not None and (batch.total, batch.completed, batch.last_seq) == (2, 0, 0)


async def test_a_completion_under_another_name_does_not_count(repository: Repository) -> None:
    # The name is what the event was built with before the update: the update checks it.
    await new_batch(repository, "b1")
    first = await repository.start_image(version("b1", "0.jpg"), "w1", 60, keys("b1/0.jpg"))
    await repository.start_image(version("b1", "1.jpg"), "w1", 60, keys("b1/1.jpg"))
    assert await repository.complete_image(first.image.id, "w1", output_key="b1/0.jpg", batch_id="b1",
                                           name="1.jpg") == []
    assert (await repository.get_image(first.image.id)).state is ImageState.PROCESSING


async def test_the_completion_that_ends_the_batch_is_written_with_its_batch_event(repository: Repository) -> None:
    # The statement leaves the batch's end to the general way, which writes batch.completed in
    # the same transaction: the last completion's events are both, numbered in order.
    await new_batch(repository, "b1", expected=2)
    a = await repository.start_image(version("b1", "a.jpg"), "w1", 60, keys("b1/a.jpg"))
    b = await repository.start_image(version("b1", "b.jpg"), "w1", 60, keys("b1/b.jpg"))
    seen = Seen(repository)
    first = await repository.complete_image(a.image.id, "w1", output_key="b1/a.jpg", batch_id="b1", name="a.jpg")
    assert (seen.groups, seen.commits) == (1, 0)
    last = await repository.complete_image(b.image.id, "w1", output_key="b1/b.jpg", batch_id="b1", name="b.jpg")
    assert (seen.groups, seen.commits) == (2, 1), "refused, then done the general way"
    seen.close()
    assert [(e.seq, e.type) for e in first + last] == [
        (1, EventType.IMAGE_COMPLETED), (2, EventType.IMAGE_COMPLETED), (3, EventType.BATCH_COMPLETED)]
    assert await logged(repository, "b1") == first + last
    batch = await repository.get_batch("b1")
    assert batch is not None and batch.state is BatchState.COMPLETED and batch.completed == 2


async def test_a_batch_without_an_expected_count_stays_open_when_all_it_has_is_done(repository: Repository) -> None:
    # Such a batch ends only once idle (the reconciler's cutoff), never at a completion: the
    # statement takes the completion that leaves nothing in flight, and the batch stays open.
    await new_batch(repository, "b1")
    a = await repository.start_image(version("b1", "a.jpg"), "w1", 60, keys("b1/a.jpg"))
    seen = Seen(repository)
    done = await repository.complete_image(a.image.id, "w1", output_key="b1/a.jpg", batch_id="b1", name="a.jpg")
    seen.close()
    assert (seen.groups, seen.commits) == (1, 0)
    assert [(e.seq, e.type) for e in done] == [(1, EventType.IMAGE_COMPLETED)]
    batch = await repository.get_batch("b1")
    assert batch is not None and (batch.state, batch.completed, batch.total) == (BatchState.OPEN, 1, 1)


async def test_a_known_key_or_a_held_result_key_refuses_the_group(repository: Repository) -> None:
    # A new version of a known key, and a key whose first result key another key holds: the unique
    # indexes skip both rows, the statement refuses, and the general way supersedes the old
    # version and gives the second key its next candidate.
    await new_batch(repository, "b1")
    old = await repository.start_image(version("b1", "a.jpg"), "w1", 60, keys("b1/a.jpg"))
    seen = Seen(repository)
    newer = await repository.start_image(version("b1", "a.jpg", etag="e2", at=old.image.uploaded_at), "w1", 60,
                                         keys("b1/a.jpg"))
    other = await repository.start_image(version("b1", "a.png"), "w1", 60, keys("b1/a.jpg", "b1/a.png.jpg"))
    seen.close()
    assert seen.groups == 2
    assert newer.claimed is not None and newer.output_key == "b1/a.jpg"
    assert (await repository.get_image(old.image.id)).state is ImageState.SUPERSEDED
    assert other.claimed is not None and other.output_key == "b1/a.png.jpg"
    batch = await repository.get_batch("b1")
    assert batch is not None and batch.total == 2
