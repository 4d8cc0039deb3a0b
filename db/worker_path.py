"""The worker's path through the database: one transaction before the work, one after, shared.

:meth:`WorkerPath.start_image` registers an announced version, claims it and reserves its result
key; :meth:`WorkerPath.complete_image` records the stored result with its event. Both queue on one
:class:`~db.group_commit.GroupCommit`: whatever queued while a transaction was being committed
shares the next one, so at a worker's steady state (images starting while earlier ones finish)
an image costs about one write transaction, one batch-lock span and one commit. Built on the
single-image operations of :mod:`db.images`, whose claims, keys and counters it keeps exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from db import statements as sql
from db.group_commit import GroupCommit
from db.images import ImageOperations
from db.records import BatchRecord, ImageRecord, ImageVersion, StartedImage
from db.transactions import CURRENT, LevelChanged, UnknownBatch, finish_then_cancel, image_record
from photoenhance.contracts.progress import BatchCounts, EventType, ProgressEvent
from photoenhance.contracts.states import BatchState, ImageState

__all__ = ["Completion", "WorkerPath"]


@dataclass(frozen=True)
class _Start:
    """One version to start (:meth:`WorkerPath.start_image`)."""

    version: ImageVersion
    owner: str
    lease_seconds: float
    candidates_for: Callable[[BatchRecord], Sequence[str]]
    #: Whether the batch, as locked, still resolves the version to its level (None: not asked).
    level_holds: Callable[[BatchRecord], bool] | None = None


#: States in which an image holds its result key against other keys of its batch.
_HOLDING = (ImageState.PROCESSING, ImageState.COMPLETED)


@dataclass(frozen=True)
class Completion:
    """One stored result to record (:meth:`WorkerPath.complete_image`)."""

    image_id: int
    owner: str
    output_key: str
    report: dict[str, Any]
    #: The image's batch when the caller knows it (saves a read); checked by the update.
    batch_id: str | None = None


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
            self._grouped().submit(_Start(version, owner, lease_seconds, candidates_for, level_holds))
        )
        assert isinstance(started, StartedImage)
        return started

    def _grouped(self) -> GroupCommit[_Start | Completion, StartedImage | list[ProgressEvent]]:
        """The group commit that starts and completions share (one per event loop)."""
        group = getattr(self, "_writes", None)
        if group is None or group.loop is not asyncio.get_running_loop():
            group = self._writes = GroupCommit(self._write_group)
        return group

    async def _write_group(
        self, items: list[_Start | Completion]
    ) -> list[StartedImage | list[ProgressEvent] | Exception]:
        """Starts and completions that queued together, in one transaction.

        Every batch concerned is locked once, in id order (the one order of every transaction
        that locks several); then the starts, each seeing the ones before it; then the
        completions, which see the starts' counters (a start of the same batch keeps a completion
        from completing the batch under it). At a prefetch window's steady state an image's
        start shares the transaction of an earlier image's completion: one lock span, one commit.
        """
        starts = [(n, item) for n, item in enumerate(items) if isinstance(item, _Start)]
        completions = [(n, item) for n, item in enumerate(items) if isinstance(item, Completion)]

        async def op(conn: AsyncConnection) -> list[StartedImage | list[ProgressEvent] | Exception]:
            results: list[StartedImage | list[ProgressEvent] | Exception] = [[] for _ in items]
            batch_of = await self._completion_batches(conn, [item for _, item in completions])
            wanted = {item.version.batch_id for _, item in starts} | {b for b in batch_of.values() if b is not None}
            locked: dict[str, BatchRecord | None] = {}
            for batch_id in sorted(wanted):
                try:
                    locked[batch_id] = await self._lock_batch(conn, batch_id)
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

        return await self._write(op, retry_on_integrity=bool(starts))

    async def _start_one(self, conn: AsyncConnection, batch: BatchRecord, start: _Start, now: datetime) -> StartedImage:
        """One start, its batch locked by the caller's transaction."""
        version, owner = start.version, start.owner
        candidates = tuple(start.candidates_for(batch))
        lease_until = now + timedelta(seconds=start.lease_seconds)
        rows = [
            image_record(r)
            for r in (
                await conn.execute(
                    sql.KEY_VERSIONS_AND_HOLDERS,
                    {"bucket": version.bucket, "key": version.key, "batch_id": batch.id,
                     "candidates": list(candidates)},
                )
            ).all()
        ]
        versions = [r for r in rows if r.bucket == version.bucket and r.key == version.key]
        # Result keys other keys of the batch hold; versions of this key share theirs.
        held = {r.output_key for r in rows if r.batch_id == batch.id and r.key != version.key
                and r.output_key in candidates and r.state in _HOLDING}
        free_key = next((c for c in candidates if c not in held), None)
        existing = next((v for v in versions if v.etag == version.etag), None)
        if existing is not None:
            if existing.state.is_final:
                return StartedImage(batch, existing, None, candidates)
            row = (
                await conn.execute(
                    sql.CLAIM_IMAGE,
                    {"image_id": existing.id, "owner": owner, "lease_until": lease_until, "now": now},
                )
            ).one_or_none()
            if row is None:
                return StartedImage(batch, existing, None, candidates)
            claimed = image_record(row)
            key = free_key
            if key is not None:
                await conn.execute(
                    sql.SET_OUTPUT_KEY, {"image_id": claimed.id, "owner": owner, "output_key": key, "now": now}
                )
                claimed = replace(claimed, output_key=key, updated_at=now)
            return StartedImage(batch, claimed, claimed, candidates, key)
        if batch.state in (BatchState.CANCELLING, BatchState.CANCELLED):
            # Uploaded after the cancel: recorded final (a redelivery finds it so), never processed.
            return StartedImage(batch, await self._ignored_upload(conn, version, now), None, candidates)
        current = [v for v in versions if v.state.value in CURRENT]
        stale = any(
            old.uploaded_at is not None and version.uploaded_at is not None and old.uploaded_at > version.uploaded_at
            for old in current
        )
        key = None if stale else free_key
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
        taken_completed, taken_failed = await self._supersede(conn, batch, current, now)
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
    ) -> list[ProgressEvent]:
        """Record a stored result; returns the events appended (none if the claim was lost).

        Counts only if this owner still holds the image, so a duplicate or late completion is a
        no-op. May also complete the batch (a ``batch.completed`` event follows). ``batch_id``:
        the image's batch, if the caller knows it (an image of another batch does not count).

        Completions (and starts) that arrive while another is being committed share the next
        transaction (:meth:`_write_group`): each returns once that transaction has ended,
        with its own events. As with every write here, a cancelled caller gets the
        ``CancelledError`` only after the transaction it joined has ended.
        """
        events = await finish_then_cancel(
            self._grouped().submit(Completion(image_id, owner, output_key, report or {}, batch_id))
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
            rows = []
            for n, (index, image) in enumerate(done, start=1):
                event = ProgressEvent(
                    batch_id=batch_id,
                    seq=batch.last_seq + n,
                    type=EventType.IMAGE_COMPLETED,
                    time=now,
                    counts=BatchCounts(
                        total=batch.total,
                        completed=batch.completed + n,
                        failed=batch.failed,
                        expected=batch.expected_count,
                        cancelled=batch.cancelled,
                    ),
                    image=image.progress(),
                )
                results[index] = [event]
                rows.append(
                    {
                        "batch_id": batch_id,
                        "seq": event.seq,
                        "type": event.type.value,
                        "image_id": image.id,
                        "payload": event.to_dict(),
                        "created_at": now,
                    }
                )
            await conn.execute(sql.INSERT_EVENT, rows)
            await conn.execute(
                sql.COUNT_BATCH,
                {"batch_id": batch_id, "completed": len(done), "failed": 0, "events": len(done), "now": now},
            )
            final = batch.completed + len(done) + batch.failed
            # A cancelling batch ends once its last in-flight image is final (db.cancel).
            draining = batch.state is BatchState.CANCELLING
            if draining or (batch.state is BatchState.OPEN and batch.total > 0 and final >= batch.total):
                last = results[done[-1][0]]
                assert isinstance(last, list)
                last += await self._maybe_complete(conn, batch_id, idle_cutoff=None)
        return results
