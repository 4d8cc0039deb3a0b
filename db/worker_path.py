"""The worker's path through the database: one transaction before the work, one after, shared.

:meth:`WorkerPath.start_image` registers an announced version, claims it and reserves its result
key; :meth:`WorkerPath.complete_image` records the stored result with its event. Both queue on one
:class:`~db.group_commit.GroupCommit`: whatever queued while a transaction was being committed
shares the next one, so at a worker's steady state (images starting while earlier ones finish)
an image costs about one write transaction, one batch-lock span and one commit. Built on the
single-image operations of :mod:`db.images`, whose claims, keys and counters it keeps exact.

A group of the common kind (every start a key not seen before, every completion a claim that
holds) is written with its batches locked last. On PostgreSQL, when it is all of one batch, it is
one statement that is its own transaction (:meth:`WorkerPath._in_one_statement`): the batch lock,
which every worker of a batch waits for, is held from that statement's update to its commit, with
no round trip to the worker between. Otherwise it is a transaction (:meth:`WorkerPath._lock_last`)
whose lock is held for the re-check of the starts, the events and the commit only. Any other group
is done with its batches locked first, as every other write.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from db import statements as sql
from db.group_commit import GroupCommit
from db.group_items import ENDED, Completion, Start
from db.group_statement import GroupValues, group_rows, group_values, planned_starts
from db.images import ImageOperations
from db.records import BatchRecord, ImageRecord, ImageVersion, StartedImage
from db.transactions import (
    CURRENT,
    LevelChanged,
    UnknownBatch,
    batch_record,
    finish_then_cancel,
    image_record,
    is_lock_race,
    is_refusal,
)
from photoenhance.contracts.progress import BatchCounts, EventType, ProgressEvent
from photoenhance.contracts.states import BatchState, ImageState

__all__ = ["WorkerPath"]

log = logging.getLogger("db.repository")


#: States in which an image holds its result key against other keys of its batch.
_HOLDING = (ImageState.PROCESSING, ImageState.COMPLETED)
#: How many batches the worker's path remembers as its transactions last found them.
REMEMBERED_BATCHES = 4096


class _LockFirst(Exception):
    """A group the batches-locked-last path does not take (:meth:`WorkerPath._lock_last`); its
    transaction is rolled back and the group done again with the batches locked first."""


class WorkerPath(ImageOperations):
    """What a worker does to an image before and after its work, grouped into shared transactions."""

    async def start_image(
        self,
        version: ImageVersion,
        owner: str,
        lease_seconds: float,
        candidates_for: Callable[[BatchRecord], Sequence[str]],
        level_holds: Callable[[BatchRecord], bool] | None = None,
    ) -> StartedImage:
        """Everything before the work, in one write transaction under the batch lock: register
        the version (as :meth:`register_image`), claim it (as :meth:`claim_image`) and reserve
        its result key from ``candidates_for(batch)`` (as :meth:`reserve_output_key`).

        A new current version is inserted already claimed, its result key with it. A known
        version is claimed if it is claimable; a final one, or one another worker holds, comes
        back unclaimed. :class:`~db.transactions.UnknownBatch` when the batch does not exist.
        ``candidates_for`` must not raise; it may return nothing (no key is reserved then).
        ``level_holds`` (must not raise either): when it says the locked batch no longer resolves
        the version to ``version.level``, nothing is written and :class:`~db.transactions.LevelChanged`
        is raised with the batch as found (a caller that resolved the level from a remembered
        batch resolves it again from that one).

        Starts and completions that arrive while another transaction of theirs is being committed
        share the next one (:meth:`_write_group`: one batch-lock span for a prefetch window's
        images); starts are done in arrival order, each seeing the ones before it.
        """
        started = await finish_then_cancel(
            self._grouped().submit(Start(version, owner, lease_seconds, candidates_for, level_holds))
        )
        assert isinstance(started, StartedImage)
        return started

    def _remembered(self) -> OrderedDict[str, BatchRecord]:
        """The batches this process's transactions last found, most recently used last: what a
        start is decided from before its batch is locked, and checked against once it is."""
        remembered = getattr(self, "_batches_found", None)
        if remembered is None:
            remembered = self._batches_found = OrderedDict()
        return remembered

    def _remember(self, batch: BatchRecord) -> None:
        remembered = self._remembered()
        remembered[batch.id] = batch
        remembered.move_to_end(batch.id)
        while len(remembered) > REMEMBERED_BATCHES:
            remembered.popitem(last=False)

    def _grouped(self) -> GroupCommit[Start | Completion, StartedImage | list[ProgressEvent]]:
        """The group commit that starts and completions share (one per event loop)."""
        group = getattr(self, "_writes", None)
        if group is None or group.loop is not asyncio.get_running_loop():
            group = self._writes = GroupCommit(self._write_group)
        return group

    async def _write_group(
        self, items: list[Start | Completion]
    ) -> list[StartedImage | list[ProgressEvent] | Exception]:
        """Starts and completions that queued together, in one transaction.

        Every batch concerned is locked once, in id order (the one order of every transaction
        that locks several); then the starts, each seeing the ones before it; then the
        completions, which see the starts' counters (a start of the same batch keeps a completion
        from completing the batch under it). At a prefetch window's steady state an image's
        start shares the transaction of an earlier image's completion: one lock span, one commit.
        """
        starts = [(n, item) for n, item in enumerate(items) if isinstance(item, Start)]
        completions = [(n, item) for n, item in enumerate(items) if isinstance(item, Completion)]
        values = None if self.db.is_sqlite else group_values(self._remembered(), starts, completions, self._now())
        if values is not None:
            try:
                return await self._statement(lambda conn: self._in_one_statement(conn, items, starts, completions, values))
            except DBAPIError as exc:
                # Refused (what it checks did not hold), a unique or foreign key in the way, or a
                # deadlock: nothing was written, and the general way below sorts it out.
                if not (is_refusal(exc) or is_lock_race(exc) or isinstance(exc, IntegrityError)):
                    raise
                log.debug("one-statement group not taken; done again locked-first: %s", exc.orig)
            return await self._write(self._locked_first(items, starts, completions), retry_on_integrity=bool(starts))
        try:
            return await self._write(
                lambda conn: self._lock_last(conn, items, starts, completions), retry_on_integrity=bool(starts),
                retry_lock_races=False,
            )
        except _LockFirst:
            pass  # rolled back: done again the general way, the batches locked first
        except DBAPIError as exc:
            if not is_lock_race(exc):
                raise
            # A deadlock between this group's unlocked inserts and another transaction's locks
            # (see _lock_last): done again locked-first, where transactions queue on the batch
            # lock instead of meeting again in the unique indexes. Retried as lock-last, the same
            # groups could keep colliding: a race test (4 processes, the same keys) once lost all
            # eight attempts so, on a loaded machine.
            log.debug("lock-last group lost a lock race; done again locked-first: %s", exc.orig)
        return await self._write(self._locked_first(items, starts, completions), retry_on_integrity=bool(starts))

    def _locked_first(
        self, items: list[Start | Completion], starts: list[tuple[int, Start]], completions: list[tuple[int, Completion]]
    ) -> Callable[[AsyncConnection], Awaitable[list[StartedImage | list[ProgressEvent] | Exception]]]:
        """The general way to write a group: every batch concerned locked first, in id order."""

        async def op(conn: AsyncConnection) -> list[StartedImage | list[ProgressEvent] | Exception]:
            results: list[StartedImage | list[ProgressEvent] | Exception] = [[] for _ in items]
            batch_of = await self._completion_batches(conn, [item for _, item in completions])
            wanted = {item.version.batch_id for _, item in starts} | {b for b in batch_of.values() if b is not None}
            locked: dict[str, BatchRecord | None] = {}
            for batch_id in sorted(wanted):
                try:
                    locked[batch_id] = batch = await self._lock_batch(conn, batch_id)
                    self._remember(batch)
                except UnknownBatch:
                    locked[batch_id] = None
            now = self._now()
            for n, start in starts:
                batch = locked[start.version.batch_id]
                if batch is None:
                    results[n] = UnknownBatch(start.version.batch_id)
                    continue
                if start.level_holds is not None and not start.level_holds(batch):
                    results[n] = LevelChanged(batch)
                    continue
                started = await self._start_one(conn, batch, start, now)
                locked[start.version.batch_id] = started.batch  # its counters as this start left them
                results[n] = started
            if completions:
                done = await self._complete_locked(conn, locked, [item for _, item in completions], batch_of, now)
                for (n, _), outcome in zip(completions, done, strict=True):
                    results[n] = outcome
            return results

        return op

    async def _in_one_statement(
        self, conn: AsyncConnection, items: list[Start | Completion], starts: list[tuple[int, Start]],
        completions: list[tuple[int, Completion]], values: GroupValues,
    ) -> list[StartedImage | list[ProgressEvent] | Exception]:
        """A group of the common kind, all of one batch, as one statement in a transaction of its
        own (:data:`~db.statements.WRITE_GROUP`, which checks what :meth:`_lock_last` checks and
        refuses itself where it does not hold). The batch is locked for that statement's end and
        its commit only, and the group costs one round trip."""
        batch, images = group_rows((await conn.execute(sql.WRITE_GROUP, values.parameters)).all())
        self._remember(batch)
        results: list[StartedImage | list[ProgressEvent] | Exception] = [[] for _ in items]
        # The batch as the starts left it, before the completions counted.
        done = len(completions)
        started = replace(batch, completed=batch.completed - done, last_seq=batch.last_seq - done)
        for (n, start), candidates in zip(starts, values.candidates, strict=True):
            image = images[(start.version.bucket, start.version.key)]
            results[n] = StartedImage(started, image, image, candidates, image.output_key)
        for (n, _), event in zip(completions, _numbered_events(values.events, started), strict=True):
            results[n] = [event]
        return results

    async def _start_one(self, conn: AsyncConnection, batch: BatchRecord, start: Start, now: datetime) -> StartedImage:
        """One start, its batch locked by the caller's transaction."""
        version, owner = start.version, start.owner
        candidates = tuple(start.candidates_for(batch))
        lease_until = now + timedelta(seconds=start.lease_seconds)
        versions, free_key = await _versions_and_free_key(conn, batch.id, version, candidates)
        existing = next((v for v in versions if v.etag == version.etag), None)
        if existing is not None:
            if existing.state.is_final:
                return StartedImage(batch, existing, None, candidates)
            row = (
                await conn.execute(
                    sql.CLAIM_IMAGE,
                    {"image_id": existing.id, "owner": owner, "lease_until": lease_until, "output_key": free_key,
                     "now": now},
                )
            ).one_or_none()
            if row is None:
                return StartedImage(batch, existing, None, candidates)
            claimed = image_record(row)
            return StartedImage(batch, claimed, claimed, candidates, free_key)
        if batch.state in (BatchState.CANCELLING, BatchState.CANCELLED):
            # Uploaded after the cancel: recorded final (a redelivery finds it so), never processed.
            return StartedImage(batch, await self._ignored_upload(conn, version, now), None, candidates)
        current = [v for v in versions if v.state.value in CURRENT]
        stale = any(
            old.uploaded_at is not None and version.uploaded_at is not None and old.uploaded_at > version.uploaded_at
            for old in current
        )
        key = None if stale else free_key
        # The older versions retire first: the new one may take their place in the unique
        # indexes of current versions and result keys (versions of one key share theirs).
        taken_completed, taken_failed = (0, 0) if stale else await self._supersede(conn, batch, current, now)
        row = (
            await conn.execute(
                sql.INSERT_IMAGE,
                {
                    "batch_id": version.batch_id,
                    "bucket": version.bucket,
                    "key": version.key,
                    "name": version.name,
                    "etag": version.etag,
                    "size": version.size,
                    "state": (ImageState.SUPERSEDED if stale else ImageState.PROCESSING).value,
                    "attempts": 0 if stale else 1,
                    "lease_owner": None if stale else owner,
                    "lease_expires_at": None if stale else lease_until,
                    "output_key": key,
                    "uploaded_at": version.uploaded_at,
                    "created_at": now,
                    "updated_at": now,
                    "level": version.level,
                },
            )
        ).one()
        image = image_record(row)
        if stale:
            return StartedImage(batch, image, None, candidates)
        last_upload = max(t for t in (batch.last_upload_at, version.uploaded_at or now) if t is not None)
        await conn.execute(
            sql.REGISTER_IN_BATCH,
            {"batch_id": batch.id, "added": 0 if current else 1, "last_upload": last_upload, "now": now},
        )
        # The batch as this transaction has now left it: a completion later in it counts from here.
        batch = replace(batch, total=batch.total + (0 if current else 1), state=BatchState.OPEN,
                        completed=batch.completed - taken_completed, failed=batch.failed - taken_failed,
                        completed_at=None, last_upload_at=last_upload, updated_at=now)
        return StartedImage(batch, image, image, candidates, key)

    async def complete_image(
        self,
        image_id: int,
        owner: str,
        *,
        output_key: str,
        report: dict[str, Any] | None = None,
        batch_id: str | None = None,
        name: str | None = None,
    ) -> list[ProgressEvent]:
        """Record a stored result; returns the events appended (none if the claim was lost).

        Counts only if this owner still holds the image, so a duplicate or late completion is a
        no-op. May also complete the batch (a ``batch.completed`` event follows). ``batch_id`` and
        ``name``: the image's batch and name, if the caller knows them (an image of another batch,
        or of another name, does not count); with both, on PostgreSQL, the completion can share
        the one statement of a group (:data:`~db.statements.WRITE_GROUP`).

        Completions (and starts) that arrive while another is being committed share the next
        transaction (:meth:`_write_group`): each returns once that transaction has ended,
        with its own events. As with every write here, a cancelled caller gets the
        ``CancelledError`` only after the transaction it joined has ended.
        """
        events = await finish_then_cancel(
            self._grouped().submit(Completion(image_id, owner, output_key, report or {}, batch_id, name))
        )
        assert isinstance(events, list)
        return events

    async def _completion_batches(self, conn: AsyncConnection, items: list[Completion]) -> dict[int, str | None]:
        """Each completion's batch: the one its caller named, else read from its image."""
        batch_of: dict[int, str | None] = {i.image_id: i.batch_id for i in items if i.batch_id is not None}
        unknown = [i.image_id for i in items if i.batch_id is None]
        if unknown:
            batch_of.update((await conn.execute(sql.IMAGE_BATCHES, {"image_ids": unknown})).all())
        return batch_of

    async def _complete_locked(
        self, conn: AsyncConnection, locked: dict[str, BatchRecord | None], items: list[Completion],
        batch_of: dict[int, str | None], now: datetime,
    ) -> list[list[ProgressEvent] | Exception]:
        """Record completions whose batches the caller's transaction has locked (``locked``, as
        the transaction has left them so far).

        Each image is completed by compare-and-set; the events of each batch take its next
        sequence numbers in the items' order, counters move once per batch, and the batch's
        ``batch.completed`` (if this completed it) goes to its last item's events.
        """
        results: list[list[ProgressEvent] | Exception] = [[] for _ in items]
        by_batch: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            batch_id = batch_of.get(item.image_id)
            if batch_id is None or locked.get(batch_id) is None:
                results[index] = LookupError(f"no image with id {item.image_id}")
            else:
                by_batch.setdefault(batch_id, []).append(index)
        for batch_id in sorted(by_batch):
            batch = locked[batch_id]
            assert batch is not None
            done: list[tuple[int, ImageRecord]] = []
            for index in by_batch[batch_id]:
                item = items[index]
                row = (
                    await conn.execute(
                        sql.COMPLETE_IMAGE,
                        {
                            "image_id": item.image_id,
                            "image_batch": batch_id,
                            "image_name": item.name,
                            "owner": item.owner,
                            "output_key": item.output_key,
                            "report": item.report,
                            "now": now,
                        },
                    )
                ).one_or_none()
                if row is not None:
                    done.append((index, image_record(row)))
            if not done:
                continue
            await self._lock_and_count(  # locked already: this moves its counters
                conn,
                {"batch_id": batch_id, "added": 0, "completed": len(done), "events": len(done), "last_upload": None,
                 "now": now},
            )
            await self._log_completions(conn, batch, done, results, now)
        return results

    async def _lock_last(
        self, conn: AsyncConnection, items: list[Start | Completion],
        starts: list[tuple[int, Start]], completions: list[tuple[int, Completion]],
    ) -> list[StartedImage | list[ProgressEvent] | Exception]:
        """The common case of a group with its batches locked last, so that the batch lock is
        held for the fewest statements: every start a key the store has not announced before
        whose batch takes uploads, every completion a claim that still holds.

        First, unlocked: each start's batch is taken as this process last found it (read if it
        has not), and all starts are inserted by one multi-row statement, already claimed with
        their first candidate result key, each row skipped where a unique index refuses it (its
        key known, or its result key held: then the group goes locked-first, which reads them);
        each completion is completed by compare-and-set. Then each batch concerned, in id order,
        is locked by the one statement that moves its counters and sequence by what was done
        (``OPEN_AND_COUNT_BATCH``; on PostgreSQL ``COUNT_AND_LOG_COMPLETIONS``, which logs the
        completions' events in the same statement); under that lock the starts are checked
        against the batch as locked (pure, no statement), the events are inserted on SQLite, and
        the transaction commits. Whatever this path does not take (a known key, a held result
        key, a lost claim, a batch unknown, being cancelled, or whose options changed the start's
        level or keys) raises :class:`_LockFirst` before the commit.

        Why nothing is read, before or under the lock: the database decides whether a key or a
        result key is free (the unique indexes of migration 0007: one current version per key,
        one holder per result key of a batch; a superseded version always has a current one the
        index sees, and a cancelled one's batch takes no uploads, which the lock checks). Two
        transactions that start the same key, or two keys with the same result key, at once:
        the second insert waits for the first transaction, skips its row once that commits, and
        its group goes locked-first. Image rows here are written before their batch is locked,
        the other order from every other write; the one cycle that can form (a supersede or an
        expired-lease claim of an image this group completes, or a locked-first insert of the
        same key, at that moment) is broken by PostgreSQL's deadlock detection, and the group
        done again locked-first (:meth:`_write_group`). SQLite runs one write transaction at a
        time, so no cycle arises there.
        """
        results: list[StartedImage | list[ProgressEvent] | Exception] = [[] for _ in items]
        now = self._now()
        batch_ids = sorted({start.version.batch_id for _, start in starts})
        remembered = self._remembered()
        found = {b: remembered[b] for b in batch_ids if b in remembered}
        unread = [b for b in batch_ids if b not in found]
        if unread:
            for row in (await conn.execute(sql.BATCHES, {"batch_ids": unread})).all():
                found[row.id] = batch_record(row)
        inserted: dict[str, list[tuple[int, Start, tuple[str, ...], ImageRecord]]] = {}
        planned = planned_starts(found, starts)
        if planned is None:
            raise _LockFirst
        rows = [_new_version_row(start, candidates[0] if candidates else None, now) for _, start, candidates in planned]
        if rows:
            # A row the unique indexes refused is missing from what comes back (see the docstring).
            result = await conn.execute(sql.INSERT_IMAGES_IF_FREE[conn.dialect.name], rows)
            images = {(r.bucket, r.key): image_record(r) for r in result.all()}
            if len(images) != len(rows):
                raise _LockFirst
            for n, start, candidates in planned:
                image = images[(start.version.bucket, start.version.key)]
                inserted.setdefault(image.batch_id, []).append((n, start, candidates, image))
        completed: dict[str, list[tuple[int, ImageRecord]]] = {}
        batch_of = await self._completion_batches(conn, [item for _, item in completions])
        for n, item in completions:
            batch_id = batch_of.get(item.image_id)
            if batch_id is None:
                raise _LockFirst
            row = (
                await conn.execute(
                    sql.COMPLETE_IMAGE,
                    {"image_id": item.image_id, "image_batch": batch_id, "image_name": item.name, "owner": item.owner,
                     "output_key": item.output_key, "report": item.report, "now": now},
                )
            ).one_or_none()
            if row is None:
                raise _LockFirst
            completed.setdefault(batch_id, []).append((n, image_record(row)))
        for batch_id in sorted(inserted.keys() | completed.keys()):
            new, done = inserted.get(batch_id, []), completed.get(batch_id, [])
            uploads = [start.version.uploaded_at or now for _, start, _, _ in new]
            values = {"batch_id": batch_id, "added": len(new), "completed": len(done), "events": len(done),
                      "last_upload": max(uploads) if uploads else None, "now": now}
            # On PostgreSQL the events go in with the statement that locks the batch, so that
            # the lock is held for that statement and the commit only; that statement numbers
            # and counts them from the batch as it locked it.
            unnumbered = _completion_events(batch_id, done, now)
            completions = [] if self.db.is_sqlite else [
                {"image_id": image.id, "event": event.to_dict()} for image, event in unnumbered
            ]
            # A report may carry text from the upload (a colour profile's name) that jsonb cannot
            # hold: such a group's events are inserted after, as plain json, like SQLite's.
            logged = bool(completions) and sql.jsonb_can_hold(completions)
            if logged:
                values["completions"] = completions
            batch = await self._lock_and_count(conn, values)
            if batch is None or (new and not _starts_hold(batch, new)):
                raise _LockFirst  # rolled back, the events with it
            self._remember(batch)
            # The batch as the starts left it, before the completions counted.
            started = replace(batch, completed=batch.completed - len(done), last_seq=batch.last_seq - len(done))
            for n, _start, candidates, image in new:
                results[n] = StartedImage(started, image, image, candidates, image.output_key)
            if done:
                await self._log_completions(conn, started, done, results, now, unnumbered=unnumbered, logged=logged)
        return results

    async def _log_completions(
        self, conn: AsyncConnection, batch: BatchRecord, done: list[tuple[int, ImageRecord]],
        results: list[Any], now: datetime, *, unnumbered: list[tuple[ImageRecord, ProgressEvent]] | None = None,
        logged: bool = False,
    ) -> None:
        """The events of completions already counted in ``batch`` (given as it was before them),
        numbered after its ``last_seq`` (``unnumbered``: already built for them), inserted unless
        the counting statement ``logged`` them; and the batch completed if they completed it."""
        events = _numbered(_completion_events(batch.id, done, now) if unnumbered is None else unnumbered, batch)
        for (n, _), (_, event) in zip(done, events, strict=True):
            results[n] = [event]
        if not logged:
            await conn.execute(sql.INSERT_EVENT, [
                {"batch_id": batch.id, "seq": event.seq, "type": event.type.value, "image_id": image.id,
                 "payload": event.to_dict(), "created_at": now}
                for image, event in events
            ])
        final = batch.completed + len(done) + batch.failed
        # A cancelling batch ends once its last in-flight image is final (db.cancel).
        if batch.state is BatchState.CANCELLING or (
            batch.state is BatchState.OPEN and batch.total > 0 and final >= batch.total
        ):
            last = results[done[-1][0]]
            assert isinstance(last, list)
            last += await self._maybe_complete(conn, batch.id, idle_cutoff=None)


def _completion_events(
    batch_id: str, done: list[tuple[int, ImageRecord]], now: datetime
) -> list[tuple[ImageRecord, ProgressEvent]]:
    """The ``image.completed`` events of ``done``, in order, not yet numbered or counted (seq 0):
    :func:`_numbered` does that from the batch, or the statement that logs them
    (:data:`~db.statements.COUNT_AND_LOG_COMPLETIONS`) from the row it locked."""
    return [
        (image, ProgressEvent(batch_id=batch_id, seq=0, type=EventType.IMAGE_COMPLETED, time=now,
                              counts=BatchCounts(), image=image.progress()))
        for _, image in done
    ]


def _numbered(
    events: list[tuple[ImageRecord, ProgressEvent]], before: BatchRecord
) -> list[tuple[ImageRecord, ProgressEvent]]:
    """``events`` numbered and counted after ``before``, the batch as it was before them."""
    numbered = _numbered_events([event for _, event in events], before)
    return [(image, event) for (image, _), event in zip(events, numbered, strict=True)]


def _numbered_events(events: list[ProgressEvent], before: BatchRecord) -> list[ProgressEvent]:
    """``image.completed`` events numbered and counted after ``before``, the batch as it was before them."""
    counts = before.counts
    return [
        replace(event, seq=before.last_seq + i, counts=replace(counts, completed=counts.completed + i))
        for i, event in enumerate(events, start=1)
    ]


def _starts_hold(batch: BatchRecord, new: list[tuple[int, Start, tuple[str, ...], ImageRecord]]) -> bool:
    """Whether what the starts decided unlocked still holds for ``batch`` as locked: it takes
    uploads, and resolves each start to the level and the result keys it was started with. (That
    no other version of the key or holder of the result key appeared meanwhile, the database's
    unique indexes see to: migration 0007.)"""
    return batch.state not in ENDED and all(
        (start.level_holds is None or start.level_holds(batch)) and tuple(start.candidates_for(batch)) == candidates
        for _, start, candidates, _image in new
    )


async def _versions_and_free_key(
    conn: AsyncConnection, batch_id: str, version: ImageVersion, candidates: tuple[str, ...]
) -> tuple[list[ImageRecord], str | None]:
    """Every version of ``version``'s key, and the first of ``candidates`` no other key of the
    batch holds (versions of one key share their result key); None when all are held."""
    rows: dict[int, ImageRecord] = {}
    for pair in [candidates[i:i + 2] for i in range(0, len(candidates), 2)] or [()]:  # two per read
        parameters = _key_and_result_keys(batch_id, version.bucket, version.key, pair)
        found = await conn.execute(sql.KEY_VERSIONS_AND_HOLDERS, parameters)
        rows.update((r.id, image_record(r)) for r in found.all())
    versions = [r for r in rows.values() if r.bucket == version.bucket and r.key == version.key]
    held = {r.output_key for r in rows.values() if r.batch_id == batch_id and r.key != version.key
            and r.output_key in candidates and r.state in _HOLDING}
    return versions, next((c for c in candidates if c not in held), None)


def _key_and_result_keys(batch_id: str, bucket: str, key: str, result_keys: Sequence[str]) -> dict[str, Any]:
    """The parameters of ``KEY_VERSIONS_AND_HOLDERS`` for a key and up to two result keys."""
    first, second = (*result_keys, None, None)[:2]
    return {"bucket": bucket, "key": key, "batch_id": batch_id, "first_key": first, "second_key": second}


def _new_version_row(start: Start, key: str | None, now: datetime) -> dict[str, Any]:
    """The row of a new current version, inserted claimed by ``start.owner`` with result key ``key``."""
    version = start.version
    return {
        "batch_id": version.batch_id, "bucket": version.bucket, "key": version.key, "name": version.name,
        "etag": version.etag, "size": version.size, "state": ImageState.PROCESSING.value, "attempts": 1,
        "lease_owner": start.owner, "lease_expires_at": now + timedelta(seconds=start.lease_seconds),
        "output_key": key, "uploaded_at": version.uploaded_at, "created_at": now, "updated_at": now,
        "level": version.level,
    }
