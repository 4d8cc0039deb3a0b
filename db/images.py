"""Image operations: registering uploaded versions, claims and leases, result keys, and the final
states each image ends in."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from db.event_log import EventLog
from db.models import Batch, Image
from db.records import BatchRecord, ImageRecord, ImageVersion, Registration
from db.transactions import CURRENT, UNFINISHED, held_by, image_record
from photoenhance.contracts.progress import EventType, ProgressEvent
from photoenhance.contracts.states import CANCELLED_CODE, BatchState, ImageState

__all__ = ["ImageOperations"]


class ImageOperations(EventLog):
    """What the processor and the reconciler do to images."""

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
                if version.level is not None and existing.level != version.level and not existing.state.is_final:
                    # Routed (again) at a level: the level it now waits in is what its status says.
                    await conn.execute(update(Image).where(Image.id == existing.id).values(level=version.level))
                    existing = await self._load_image(conn, existing.id)
                return Registration(image=existing, created=False)
            now = self._now()
            if batch.state in (BatchState.CANCELLING, BatchState.CANCELLED):
                # An upload after the cancel is recorded (so a redelivery finds it final) but
                # neither processed, counted nor listed: the batch's counts were final at the
                # cancel. Recorded as superseded (by the cancel), which is exactly that.
                return Registration(image=await self._ignored_upload(conn, version, now), created=True)
            current = (
                await conn.execute(
                    select(*Image.__table__.c).where(
                        Image.bucket == version.bucket,
                        Image.key == version.key,
                        Image.state.in_(CURRENT),
                    )
                )
            ).all()
            current_images = [image_record(r) for r in current]
            stale = any(
                old.uploaded_at is not None
                and version.uploaded_at is not None
                and old.uploaded_at > version.uploaded_at
                for old in current_images
            )
            state = ImageState.SUPERSEDED if stale else ImageState.PENDING
            superseded: tuple[int, ...] = ()
            if not stale:
                # Retired before the insert: one current version per key (a unique index).
                superseded = tuple(old.id for old in current_images)
                await self._supersede(conn, batch, current_images, now)
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
                        level=version.level,
                    )
                    .returning(Image.id)
                )
            ).scalar_one()
            if not stale:
                last_upload = max(
                    t for t in (batch.last_upload_at, version.uploaded_at or now) if t is not None
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

    async def _ignored_upload(self, conn: AsyncConnection, version: ImageVersion, now: datetime) -> ImageRecord:
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
                    state=ImageState.SUPERSEDED.value,
                    attempts=0,
                    reason="uploaded after the batch was cancelled",
                    code=CANCELLED_CODE,
                    uploaded_at=version.uploaded_at,
                    created_at=now,
                    updated_at=now,
                    finished_at=now,
                )
                .returning(Image.id)
            )
        ).scalar_one()
        return await self._load_image(conn, image_id)

    async def get_image(self, image_id: int) -> ImageRecord | None:
        """The image version with this id, or None."""
        async with self.db.read() as conn:
            row = (await conn.execute(select(*Image.__table__.c).where(Image.id == image_id))).one_or_none()
        return None if row is None else image_record(row)

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
                        output_key=None,  # each attempt reserves its own (reserve_output_key)
                        updated_at=now,
                    )
                    .returning(*Image.__table__.c)
                )
            ).one_or_none()
            return None if row is None else image_record(row)

        return await self._write(op)

    async def extend_lease(self, image_id: int, owner: str, lease_seconds: float) -> bool:
        """Push a held lease forward; False if the image is no longer this owner's."""

        async def op(conn: AsyncConnection) -> bool:
            now = self._now()
            result = await conn.execute(
                update(Image)
                .where(Image.id == image_id, *held_by(owner))
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
                .where(Image.id == image_id, *held_by(owner))
                .values(output_key=free[0], updated_at=self._now())
            )
            return free[0] if result.rowcount == 1 else None

        # A start that took the key meanwhile, unlocked (db.worker_path), is refused by the unique
        # index of result keys; the retry reads it as a holder.
        return await self._write(op, retry_on_integrity=True)

    async def fail_image(
        self,
        image_id: int,
        *,
        reason: str,
        code: str,
        owner: str | None = None,
        spare_live_lease: bool = False,
    ) -> list[ProgressEvent]:
        """Record a final failure with its reason; returns the events appended.

        With ``owner``, only that owner's claim may fail the image; without one (a refusal before
        any claim, or a message dead-lettered after its worker died) a pending or processing image
        is failed whoever holds it, unless ``spare_live_lease`` and a worker's lease on it still
        runs (that worker may yet finish it). Already final images are left alone.
        """
        if owner is not None:
            claim = held_by(owner)
        elif spare_live_lease:
            claim = [
                or_(
                    Image.state == ImageState.PENDING.value,
                    and_(Image.state == ImageState.PROCESSING.value, Image.lease_expires_at < self._now()),
                )
            ]
        else:
            claim = [Image.state.in_(UNFINISHED)]
        # A failed image has no result, so it gives up any result key it reserved.
        values = {"state": ImageState.FAILED.value, "reason": reason, "code": code, "output_key": None}
        return await self._finish(image_id, claim, values, EventType.IMAGE_FAILED)

    async def release_image(self, image_id: int, owner: str) -> bool:
        """Hand a claimed image back (pending) so another attempt may take it at once."""

        async def op(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                update(Image)
                .where(Image.id == image_id, *held_by(owner))
                .values(
                    state=ImageState.PENDING.value,
                    lease_owner=None,
                    lease_expires_at=None,
                    output_key=None,  # no longer held: another key of the batch may take it meanwhile
                    updated_at=self._now(),
                )
            )
            return result.rowcount == 1

        return await self._write(op)


    async def unfinished_images(self, batch_id: str) -> list[ImageRecord]:
        """A batch's images that are pending or processing."""
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(*Image.__table__.c)
                    .where(Image.batch_id == batch_id, Image.state.in_(UNFINISHED))
                    .order_by(Image.id)
                )
            ).all()
        return [image_record(r) for r in rows]

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
        return [image_record(r) for r in rows]

    async def known_versions(self, bucket: str, batch_id: str) -> set[tuple[str, str]]:
        """(key, etag) of every version registered for a batch: what the reconciler compares."""
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(Image.key, Image.etag).where(Image.bucket == bucket, Image.batch_id == batch_id)
                )
            ).all()
        return {(k, e) for k, e in rows}


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
                    conn, batch_id, event_type, image_record(row), completed=int(completed), failed=int(not completed)
                )
            ]
            events += await self._maybe_complete(conn, batch_id, idle_cutoff=None)
            return events

        return await self._write(op)


    async def _supersede(
        self, conn: AsyncConnection, batch: BatchRecord, olds: Iterable[ImageRecord], now: datetime
    ) -> tuple[int, int]:
        """Retire older versions of a key and take back what they counted; returns how many
        completed and failed images were taken back."""
        completed = failed = 0
        ids = []
        for old in olds:
            ids.append(old.id)
            completed += old.state is ImageState.COMPLETED
            failed += old.state is ImageState.FAILED
        if not ids:
            return 0, 0
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
        return completed, failed
