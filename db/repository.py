"""Every database operation the services need, each one transaction.

Exactness under concurrent writers (several processes, several machines) rests on three rules:

1. Every write that touches a batch first locks the batch row (``SELECT ... FOR UPDATE`` on
   PostgreSQL; SQLite serialises writers with ``BEGIN IMMEDIATE``), then the image rows. One lock
   order means no deadlocks, and counter and sequence updates of one batch never interleave.
2. State changes are compare-and-set updates (``WHERE state = ... AND lease_owner = ...``): a
   completion counts only if this call moved the image out of ``processing``.
3. An event is inserted in the same transaction as the change it reports, with
   ``seq = last_seq + 1`` of its batch, so sequence numbers are gapless and never reused.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from db.connection import Database
from db.models import Batch, BatchFile, Event, Image, utcnow
from db.records import BatchRecord, BatchSnapshot, ImageRecord, ImageVersion, Registration
from photoenhance.contracts.progress import EventType, ImageProgress, ProgressEvent
from photoenhance.contracts.states import BatchState, ImageState

__all__ = ["BatchExists", "DeclaredFile", "Repository", "UnknownBatch"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Attempts at a transaction that lost a lock race (SQLite busy, PostgreSQL deadlock/serialisation).
RETRY_ATTEMPTS = 8

_UNFINISHED = (ImageState.PENDING.value, ImageState.PROCESSING.value)
_CURRENT = (
    ImageState.PENDING.value,
    ImageState.PROCESSING.value,
    ImageState.COMPLETED.value,
    ImageState.FAILED.value,
)


class UnknownBatch(LookupError):
    """No batch has this id."""


class BatchExists(Exception):
    """A batch with this id exists already."""


@dataclass(frozen=True)
class DeclaredFile:
    """A file the ingest API presigned an upload for."""

    name: str
    original_name: str
    declared_size: int
    content_type: str


class Repository:
    """Batches, images and events; every method is one transaction (retried on lock races)."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self._now = clock

    # -- batches ---------------------------------------------------------------------------

    async def create_batch(
        self,
        batch_id: str,
        *,
        input_bucket: str,
        options: dict[str, Any],
        source: str = "api",
        expected_count: int | None = None,
        token_hash: str | None = None,
        files: Sequence[DeclaredFile] = (),
    ) -> BatchRecord:
        """Create a batch (and the files it declares); :class:`BatchExists` if the id is taken."""

        async def op(conn: AsyncConnection) -> BatchRecord:
            now = self._now()
            try:
                row = (
                    await conn.execute(
                        insert(Batch)
                        .values(
                            id=batch_id,
                            state=BatchState.OPEN.value,
                            source=source,
                            input_bucket=input_bucket,
                            options=options,
                            expected_count=expected_count,
                            token_hash=token_hash,
                            total=0,
                            completed=0,
                            failed=0,
                            last_seq=0,
                            created_at=now,
                            updated_at=now,
                        )
                        .returning(*Batch.__table__.c)
                    )
                ).one()
            except IntegrityError as exc:
                raise BatchExists(batch_id) from exc
            if files:
                await conn.execute(
                    insert(BatchFile),
                    [
                        {
                            "batch_id": batch_id,
                            "name": f.name,
                            "original_name": f.original_name,
                            "declared_size": f.declared_size,
                            "content_type": f.content_type,
                        }
                        for f in files
                    ],
                )
            return _batch(row)

        return await self._write(op)

    async def ensure_batch(
        self,
        batch_id: str,
        *,
        input_bucket: str,
        options: dict[str, Any],
        expected_count: int | None = None,
        source: str = "direct",
    ) -> tuple[BatchRecord, bool]:
        """The batch with this id, created implicitly if unknown; also says whether it was created."""
        try:
            record = await self.create_batch(
                batch_id,
                input_bucket=input_bucket,
                options=options,
                source=source,
                expected_count=expected_count,
            )
            return record, True
        except BatchExists:
            existing = await self.get_batch(batch_id)
            if existing is None:  # deleted in between; vanishingly rare, try once more
                return await self.ensure_batch(
                    batch_id, input_bucket=input_bucket, options=options, expected_count=expected_count
                )
            return existing, False

    async def update_batch_plan(
        self, batch_id: str, *, options: dict[str, Any] | None = None, expected_count: int | None = None
    ) -> BatchRecord:
        """Apply a manifest: new options and/or an expected image count (which may complete the batch)."""

        async def op(conn: AsyncConnection) -> tuple[BatchRecord, list[ProgressEvent]]:
            await self._lock_batch(conn, batch_id)
            values: dict[str, Any] = {"updated_at": self._now()}
            if options is not None:
                values["options"] = options
            if expected_count is not None:
                values["expected_count"] = expected_count
            await conn.execute(update(Batch).where(Batch.id == batch_id).values(**values))
            events = await self._maybe_complete(conn, batch_id, idle_cutoff=None)
            return await self._load_batch(conn, batch_id), events

        record, _events = await self._write(op)
        return record

    async def get_batch(self, batch_id: str) -> BatchRecord | None:
        """The batch, or None."""
        async with self.db.read() as conn:
            row = (await conn.execute(select(*Batch.__table__.c).where(Batch.id == batch_id))).one_or_none()
        return None if row is None else _batch(row)

    async def declared_files(self, batch_id: str) -> list[DeclaredFile]:
        """The files the ingest API presigned uploads for, by name."""
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(BatchFile.name, BatchFile.original_name, BatchFile.declared_size, BatchFile.content_type)
                    .where(BatchFile.batch_id == batch_id)
                    .order_by(BatchFile.name)
                )
            ).all()
        return [DeclaredFile(*row) for row in rows]

    async def open_batches(self) -> list[BatchRecord]:
        """Batches not yet completed, oldest first."""
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(*Batch.__table__.c)
                    .where(Batch.state == BatchState.OPEN.value)
                    .order_by(Batch.created_at)
                )
            ).all()
        return [_batch(r) for r in rows]

    async def batch_snapshot(self, batch_id: str) -> BatchSnapshot | None:
        """The batch and the current version of each of its images (superseded ones left out)."""
        async with self.db.read() as conn:
            row = (await conn.execute(select(*Batch.__table__.c).where(Batch.id == batch_id))).one_or_none()
            if row is None:
                return None
            images = (
                await conn.execute(
                    select(*Image.__table__.c)
                    .where(Image.batch_id == batch_id, Image.state != ImageState.SUPERSEDED.value)
                    .order_by(Image.name, Image.id)
                )
            ).all()
        return BatchSnapshot(batch=_batch(row), images=[_image(r) for r in images])

    # -- images ----------------------------------------------------------------------------

    async def register_image(self, version: ImageVersion) -> Registration:
        """Record an uploaded object version; idempotent by (bucket, key, etag).

        A new etag for a known key supersedes the older version (its counters are taken back),
        unless the older one was uploaded later, in which case the late arrival is recorded as
        already superseded. Registering into a completed batch reopens it.
        """

        async def op(conn: AsyncConnection) -> Registration:
            batch = await self._lock_batch(conn, version.batch_id)
            existing = await self._find_version(conn, version.bucket, version.key, version.etag)
            if existing is not None:
                return Registration(image=existing, created=False)
            now = self._now()
            current = (
                await conn.execute(
                    select(*Image.__table__.c).where(
                        Image.bucket == version.bucket,
                        Image.key == version.key,
                        Image.state.in_(_CURRENT),
                    )
                )
            ).all()
            current_images = [_image(r) for r in current]
            stale = any(
                old.uploaded_at is not None
                and version.uploaded_at is not None
                and old.uploaded_at > version.uploaded_at
                for old in current_images
            )
            state = ImageState.SUPERSEDED if stale else ImageState.PENDING
            image_id = (
                await conn.execute(
                    insert(Image)
                    .values(
                        batch_id=version.batch_id,
                        bucket=version.bucket,
                        key=version.key,
                        name=version.name,
                        etag=version.etag,
                        size=version.size,
                        state=state.value,
                        attempts=0,
                        uploaded_at=version.uploaded_at,
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(Image.id)
                )
            ).scalar_one()
            superseded: tuple[int, ...] = ()
            if not stale:
                superseded = tuple(old.id for old in current_images)
                await self._supersede(conn, batch, current_images, now)
                last_upload = max(
                    (t for t in (batch.last_upload_at, version.uploaded_at or now) if t is not None)
                )
                await conn.execute(
                    update(Batch)
                    .where(Batch.id == batch.id)
                    .values(
                        total=Batch.total + (0 if current_images else 1),
                        state=BatchState.OPEN.value,
                        completed_at=None,
                        last_upload_at=last_upload,
                        updated_at=now,
                    )
                )
            image = await self._load_image(conn, image_id)
            return Registration(image=image, created=True, superseded=superseded)

        return await self._write(op, retry_on_integrity=True)

    async def get_image(self, image_id: int) -> ImageRecord | None:
        """The image version with this id, or None."""
        async with self.db.read() as conn:
            row = (await conn.execute(select(*Image.__table__.c).where(Image.id == image_id))).one_or_none()
        return None if row is None else _image(row)

    async def find_image(self, bucket: str, key: str, etag: str) -> ImageRecord | None:
        """The image version (bucket, key, etag), or None."""
        async with self.db.read() as conn:
            return await self._find_version(conn, bucket, key, etag)

    async def claim_image(self, image_id: int, owner: str, lease_seconds: float) -> ImageRecord | None:
        """Take an image for processing until the lease expires; None if it is not claimable.

        Claimable: pending, or processing under a lease that has expired (its worker crashed).
        """

        async def op(conn: AsyncConnection) -> ImageRecord | None:
            now = self._now()
            row = (
                await conn.execute(
                    update(Image)
                    .where(
                        Image.id == image_id,
                        or_(
                            Image.state == ImageState.PENDING.value,
                            and_(Image.state == ImageState.PROCESSING.value, Image.lease_expires_at < now),
                        ),
                    )
                    .values(
                        state=ImageState.PROCESSING.value,
                        lease_owner=owner,
                        lease_expires_at=now + timedelta(seconds=lease_seconds),
                        attempts=Image.attempts + 1,
                        updated_at=now,
                    )
                    .returning(*Image.__table__.c)
                )
            ).one_or_none()
            return None if row is None else _image(row)

        return await self._write(op)

    async def extend_lease(self, image_id: int, owner: str, lease_seconds: float) -> bool:
        """Push a held lease forward; False if the image is no longer this owner's."""

        async def op(conn: AsyncConnection) -> bool:
            now = self._now()
            result = await conn.execute(
                update(Image)
                .where(Image.id == image_id, *_held_by(owner))
                .values(lease_expires_at=now + timedelta(seconds=lease_seconds), updated_at=now)
            )
            return result.rowcount == 1

        return await self._write(op)

    async def reserve_output_key(self, image_id: int, owner: str, candidates: Sequence[str]) -> str | None:
        """Record the first of ``candidates`` no other key of the batch holds as this image's result key.

        Two inputs of one batch can map to one result key (``a.png`` and ``a.jpg`` both give
        ``a.jpg``). The key is held by an image of another key that is processing or completed
        with it; versions of the same key share theirs. Returns the key recorded, or None when
        every candidate is held or this owner no longer holds the image. Under the batch lock, so
        two workers never reserve one key.
        """

        async def op(conn: AsyncConnection) -> str | None:
            batch_id = await self._batch_of(conn, image_id)
            await self._lock_batch(conn, batch_id)
            mine = await self._load_image(conn, image_id)
            holders = (
                await conn.execute(
                    select(Image.output_key).where(
                        Image.batch_id == batch_id,
                        Image.key != mine.key,
                        Image.output_key.in_(list(candidates)),
                        Image.state.in_((ImageState.PROCESSING.value, ImageState.COMPLETED.value)),
                    )
                )
            ).scalars().all()
            free = [c for c in candidates if c not in set(holders)]
            if not free:
                return None
            result = await conn.execute(
                update(Image)
                .where(Image.id == image_id, *_held_by(owner))
                .values(output_key=free[0], updated_at=self._now())
            )
            return free[0] if result.rowcount == 1 else None

        return await self._write(op)

    async def complete_image(
        self, image_id: int, owner: str, *, output_key: str, report: dict[str, Any] | None = None
    ) -> list[ProgressEvent]:
        """Record a stored result; returns the events appended (none if the claim was lost).

        Counts only if this owner still holds the image, so a duplicate or late completion is a
        no-op. May also complete the batch (a ``batch.completed`` event follows).
        """
        values = {"state": ImageState.COMPLETED.value, "output_key": output_key, "report": report or {}}
        return await self._finish(image_id, _held_by(owner), values, EventType.IMAGE_COMPLETED)

    async def fail_image(
        self, image_id: int, *, reason: str, code: str, owner: str | None = None
    ) -> list[ProgressEvent]:
        """Record a final failure with its reason; returns the events appended.

        With ``owner``, only that owner's claim may fail the image; without one (a refusal before
        any claim, or a message dead-lettered after its worker died) a pending or processing image
        is failed whoever holds it. Already final images are left alone.
        """
        claim = [Image.state.in_(_UNFINISHED)] if owner is None else _held_by(owner)
        # A failed image has no result, so it gives up any result key it reserved.
        values = {"state": ImageState.FAILED.value, "reason": reason, "code": code, "output_key": None}
        return await self._finish(image_id, claim, values, EventType.IMAGE_FAILED)

    async def release_image(self, image_id: int, owner: str) -> bool:
        """Hand a claimed image back (pending) so another attempt may take it at once."""

        async def op(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                update(Image)
                .where(Image.id == image_id, *_held_by(owner))
                .values(
                    state=ImageState.PENDING.value,
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=self._now(),
                )
            )
            return result.rowcount == 1

        return await self._write(op)

    async def retry_failed(self, batch_id: str) -> list[ImageRecord]:
        """Put a batch's failed images back to pending (reopening the batch); returns them."""

        async def op(conn: AsyncConnection) -> list[ImageRecord]:
            await self._lock_batch(conn, batch_id)
            now = self._now()
            rows = (
                await conn.execute(
                    update(Image)
                    .where(Image.batch_id == batch_id, Image.state == ImageState.FAILED.value)
                    .values(
                        state=ImageState.PENDING.value,
                        reason=None,
                        code=None,
                        finished_at=None,
                        updated_at=now,
                    )
                    .returning(*Image.__table__.c)
                )
            ).all()
            if rows:
                await conn.execute(
                    update(Batch)
                    .where(Batch.id == batch_id)
                    .values(
                        failed=Batch.failed - len(rows),
                        state=BatchState.OPEN.value,
                        completed_at=None,
                        updated_at=now,
                    )
                )
            return [_image(r) for r in rows]

        return await self._write(op)

    async def unfinished_images(self, batch_id: str) -> list[ImageRecord]:
        """A batch's images that are pending or processing."""
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(*Image.__table__.c)
                    .where(Image.batch_id == batch_id, Image.state.in_(_UNFINISHED))
                    .order_by(Image.id)
                )
            ).all()
        return [_image(r) for r in rows]

    async def expired_leases(self) -> list[ImageRecord]:
        """Images whose worker stopped renewing its claim (crashed or cut off)."""
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(*Image.__table__.c)
                    .where(Image.state == ImageState.PROCESSING.value, Image.lease_expires_at < self._now())
                    .order_by(Image.id)
                )
            ).all()
        return [_image(r) for r in rows]

    async def known_versions(self, bucket: str, batch_id: str) -> set[tuple[str, str]]:
        """(key, etag) of every version registered for a batch: what the reconciler compares."""
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(Image.key, Image.etag).where(Image.bucket == bucket, Image.batch_id == batch_id)
                )
            ).all()
        return {(k, e) for k, e in rows}

    async def complete_if_idle(self, batch_id: str, idle_seconds: float) -> list[ProgressEvent]:
        """Complete a batch that has no expected count once it has been quiet long enough.

        Quiet: every image final and the last upload at least ``idle_seconds`` ago.
        """

        async def op(conn: AsyncConnection) -> list[ProgressEvent]:
            await self._lock_batch(conn, batch_id)
            cutoff = self._now() - timedelta(seconds=idle_seconds)
            return await self._maybe_complete(conn, batch_id, idle_cutoff=cutoff)

        return await self._write(op)

    # -- events ----------------------------------------------------------------------------

    async def append_event(
        self, batch_id: str, type: EventType, image: ImageRecord | None = None
    ) -> ProgressEvent:
        """Append an event to a batch's log with the next sequence number."""

        async def op(conn: AsyncConnection) -> ProgressEvent:
            await self._lock_batch(conn, batch_id)
            return await self._append(conn, batch_id, type, image)

        return await self._write(op)

    async def events_since(self, batch_id: str, since: int = 0, limit: int | None = None) -> list[ProgressEvent]:
        """A batch's events with ``seq > since``, in order."""
        query = select(Event.payload).where(Event.batch_id == batch_id, Event.seq > since).order_by(Event.seq)
        if limit is not None:
            query = query.limit(limit)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).scalars().all()
        return [ProgressEvent.from_dict(p) for p in rows]

    async def latest_event_for(self, image_id: int) -> ProgressEvent | None:
        """The last event about an image (to publish again after a crash between commit and publish)."""
        async with self.db.read() as conn:
            payload = (
                await conn.execute(
                    select(Event.payload).where(Event.image_id == image_id).order_by(Event.seq.desc()).limit(1)
                )
            ).scalar_one_or_none()
        return None if payload is None else ProgressEvent.from_dict(payload)

    # -- internals -------------------------------------------------------------------------

    async def _write(self, op: Callable[[AsyncConnection], Awaitable[T]], *, retry_on_integrity: bool = False) -> T:
        """Run ``op`` in a write transaction, retrying lost lock races with jittered back-off."""
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                async with self.db.write() as conn:
                    return await op(conn)
            except IntegrityError:
                if not retry_on_integrity or attempt == RETRY_ATTEMPTS:
                    raise
            except DBAPIError as exc:
                if not _is_lock_race(exc) or attempt == RETRY_ATTEMPTS:
                    raise
                log.debug("lock race (attempt %d): %s", attempt, exc.orig)
            await asyncio.sleep(random.uniform(0, 0.02 * 2**attempt))
        raise AssertionError("unreachable")

    async def _finish(
        self, image_id: int, claim: list[Any], values: dict[str, Any], event_type: EventType
    ) -> list[ProgressEvent]:
        """Move an image to a final state if ``claim`` still holds, count it and log its event."""

        async def op(conn: AsyncConnection) -> list[ProgressEvent]:
            batch_id = await self._batch_of(conn, image_id)
            await self._lock_batch(conn, batch_id)
            now = self._now()
            row = (
                await conn.execute(
                    update(Image)
                    .where(Image.id == image_id, *claim)
                    .values(
                        {
                            "reason": None,
                            "code": None,
                            **values,
                            "lease_owner": None,
                            "lease_expires_at": None,
                            "finished_at": now,
                            "updated_at": now,
                        }
                    )
                    .returning(*Image.__table__.c)
                )
            ).one_or_none()
            if row is None:
                return []
            completed = event_type is EventType.IMAGE_COMPLETED
            events = [
                await self._append(
                    conn, batch_id, event_type, _image(row), completed=int(completed), failed=int(not completed)
                )
            ]
            events += await self._maybe_complete(conn, batch_id, idle_cutoff=None)
            return events

        return await self._write(op)

    async def _lock_batch(self, conn: AsyncConnection, batch_id: str) -> BatchRecord:
        row = (
            await conn.execute(
                select(*Batch.__table__.c).where(Batch.id == batch_id).with_for_update()
            )
        ).one_or_none()
        if row is None:
            raise UnknownBatch(batch_id)
        return _batch(row)

    async def _load_batch(self, conn: AsyncConnection, batch_id: str) -> BatchRecord:
        row = (await conn.execute(select(*Batch.__table__.c).where(Batch.id == batch_id))).one()
        return _batch(row)

    async def _load_image(self, conn: AsyncConnection, image_id: int) -> ImageRecord:
        row = (await conn.execute(select(*Image.__table__.c).where(Image.id == image_id))).one()
        return _image(row)

    async def _batch_of(self, conn: AsyncConnection, image_id: int) -> str:
        batch_id = (await conn.execute(select(Image.batch_id).where(Image.id == image_id))).scalar_one_or_none()
        if batch_id is None:
            raise LookupError(f"no image with id {image_id}")
        return batch_id

    async def _find_version(self, conn: AsyncConnection, bucket: str, key: str, etag: str) -> ImageRecord | None:
        row = (
            await conn.execute(
                select(*Image.__table__.c).where(Image.bucket == bucket, Image.key == key, Image.etag == etag)
            )
        ).one_or_none()
        return None if row is None else _image(row)

    async def _supersede(
        self, conn: AsyncConnection, batch: BatchRecord, olds: Iterable[ImageRecord], now: datetime
    ) -> None:
        """Retire older versions of a key and take back what they counted."""
        completed = failed = 0
        ids = []
        for old in olds:
            ids.append(old.id)
            completed += old.state is ImageState.COMPLETED
            failed += old.state is ImageState.FAILED
        if not ids:
            return
        await conn.execute(
            update(Image)
            .where(Image.id.in_(ids))
            .values(
                state=ImageState.SUPERSEDED.value,
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now,
            )
        )
        if completed or failed:
            await conn.execute(
                update(Batch)
                .where(Batch.id == batch.id)
                .values(completed=Batch.completed - completed, failed=Batch.failed - failed)
            )

    async def _append(
        self,
        conn: AsyncConnection,
        batch_id: str,
        type: EventType,
        image: ImageRecord | None,
        *,
        completed: int = 0,
        failed: int = 0,
    ) -> ProgressEvent:
        """Move the batch's counters and sequence on together and log the event."""
        now = self._now()
        row = (
            await conn.execute(
                update(Batch)
                .where(Batch.id == batch_id)
                .values(
                    completed=Batch.completed + completed,
                    failed=Batch.failed + failed,
                    last_seq=Batch.last_seq + 1,
                    updated_at=now,
                )
                .returning(*Batch.__table__.c)
            )
        ).one()
        batch = _batch(row)
        progress: ImageProgress | None = None if image is None else image.progress()
        event = ProgressEvent(
            batch_id=batch_id, seq=batch.last_seq, type=type, time=now, counts=batch.counts, image=progress
        )
        await conn.execute(
            insert(Event).values(
                batch_id=batch_id,
                seq=event.seq,
                type=type.value,
                image_id=None if image is None else image.id,
                payload=event.to_dict(),
                created_at=now,
            )
        )
        return event

    async def _maybe_complete(
        self, conn: AsyncConnection, batch_id: str, *, idle_cutoff: datetime | None
    ) -> list[ProgressEvent]:
        """Complete the batch if every image it expects is final.

        With an expected count: once that many keys are final. Without one: only when the caller
        gives an ``idle_cutoff`` and the last upload is older than it.
        """
        batch = await self._load_batch(conn, batch_id)
        if batch.state is not BatchState.OPEN or batch.total == 0:
            return []
        if batch.completed + batch.failed < batch.total:
            return []
        unfinished = (
            await conn.execute(
                select(func.count()).select_from(Image).where(
                    Image.batch_id == batch_id, Image.state.in_(_UNFINISHED)
                )
            )
        ).scalar_one()
        if unfinished:
            return []
        if batch.expected_count is not None:
            if batch.completed + batch.failed < batch.expected_count:
                return []
        elif idle_cutoff is None or (batch.last_upload_at is not None and batch.last_upload_at > idle_cutoff):
            return []
        now = self._now()
        await conn.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(state=BatchState.COMPLETED.value, completed_at=now, updated_at=now)
        )
        return [await self._append(conn, batch_id, EventType.BATCH_COMPLETED, None)]


def _held_by(owner: str) -> list[Any]:
    """Conditions that hold while ``owner``'s claim on an image stands."""
    return [Image.state == ImageState.PROCESSING.value, Image.lease_owner == owner]


def _is_lock_race(exc: DBAPIError) -> bool:
    """Whether the failure was losing a lock race that a retry resolves."""
    text = str(exc.orig).lower()
    code = getattr(exc.orig, "sqlstate", None) or getattr(getattr(exc.orig, "__cause__", None), "sqlstate", None)
    return (
        "database is locked" in text
        or "database table is locked" in text
        or code in {"40001", "40P01"}
        or "deadlock detected" in text
        or "could not serialize" in text
    )


def _batch(row: Any) -> BatchRecord:
    values = dict(row._mapping)
    values["state"] = BatchState(values["state"])
    return BatchRecord(**values)


def _image(row: Any) -> ImageRecord:
    values = dict(row._mapping)
    values["state"] = ImageState(values["state"])
    return ImageRecord(**values)
