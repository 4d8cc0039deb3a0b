"""Batch operations: creating batches (with the files the ingest API declared), their plans,
snapshots and retries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from db.event_log import EventLog
from db.models import Batch, BatchFile, Image
from db.quotas import charge_quota
from db.records import BatchRecord, BatchSnapshot, ImageRecord
from db.transactions import BatchExists, batch_record, declared_not_uploaded, image_record
from db.webhooks import NewSubscription, add_subscription
from photoenhance.contracts.failures import FailureCode
from photoenhance.contracts.keys import input_key
from photoenhance.contracts.progress import EventType, ProgressEvent
from photoenhance.contracts.states import UPLOAD_MISSING, BatchState, ImageState
from photoenhance.ratelimit import QuotaPlan

__all__ = ["CANNOT_HELP_CODES", "BatchOperations", "DeclaredFile", "RetryOutcome"]

#: Failure codes a retry leaves alone (see :attr:`FailureCode.retry_can_help`).
CANNOT_HELP_CODES = frozenset(code.value for code in FailureCode if not code.retry_can_help)


@dataclass(frozen=True)
class RetryOutcome:
    """What a retry of a batch's failed images did."""

    #: The images put back to pending.
    retried: list[ImageRecord]
    #: Failed images left alone, counted per failure code: a retry cannot help them.
    skipped: dict[str, int] = field(default_factory=dict)
    #: Set when the retry came too soon after the last one: seconds until the next is accepted.
    retry_after_s: float | None = None
    #: When this retry was accepted (None when it was refused as too soon).
    retried_at: datetime | None = None


@dataclass(frozen=True)
class DeclaredFile:
    """A file the ingest API presigned an upload for."""

    name: str
    original_name: str
    declared_size: int
    content_type: str


class BatchOperations(EventLog):
    """What the ingest API and the processor do to batches."""

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
        quota: QuotaPlan | None = None,
        webhook: NewSubscription | None = None,
    ) -> BatchRecord:
        """Create a batch (and the files it declares); :class:`BatchExists` if the id is taken.

        With ``quota``, the creation is counted against that plan's limits in the same
        transaction, and :class:`~db.quotas.QuotaExceeded` leaves nothing behind.
        """

        async def op(conn: AsyncConnection) -> BatchRecord:
            now = self._now()
            if quota is not None:
                await charge_quota(conn, quota, now)
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
                            quota_subject=None if quota is None else quota.subject,
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
            if webhook is not None:
                await add_subscription(conn, batch_id, webhook, now)
            return batch_record(row)

        return await self._write(op)

    async def ensure_batch(
        self,
        batch_id: str,
        *,
        input_bucket: str,
        options: dict[str, Any],
        expected_count: int | None = None,
        source: str = "direct",
        webhook: NewSubscription | None = None,
    ) -> tuple[BatchRecord, bool]:
        """The batch with this id, created implicitly if unknown (with ``webhook``, in the same
        transaction); also says whether it was created."""
        try:
            record = await self.create_batch(
                batch_id,
                input_bucket=input_bucket,
                options=options,
                source=source,
                expected_count=expected_count,
                webhook=webhook,
            )
            return record, True
        except BatchExists:
            existing = await self.get_batch(batch_id)
            if existing is None:  # deleted in between; vanishingly rare, try once more
                return await self.ensure_batch(
                    batch_id, input_bucket=input_bucket, options=options, expected_count=expected_count,
                    webhook=webhook,
                )
            return existing, False

    async def update_batch_plan(
        self, batch_id: str, *, options: dict[str, Any] | None = None, expected_count: int | None = None
    ) -> tuple[BatchRecord, list[ProgressEvent]]:
        """Apply a manifest: new options and/or an expected image count (which may complete the batch).

        Returns the batch as updated and the events appended (``batch.completed`` when it completed).
        """

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

        return await self._write(op)

    async def get_batch(self, batch_id: str) -> BatchRecord | None:
        """The batch, or None."""
        async with self.db.read() as conn:
            row = (await conn.execute(select(*Batch.__table__.c).where(Batch.id == batch_id))).one_or_none()
        return None if row is None else batch_record(row)

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
        return [batch_record(r) for r in rows]

    async def batch_snapshot(self, batch_id: str) -> BatchSnapshot | None:
        """The batch and the current version of each of its images (superseded ones left out),
        read from one snapshot so the counters agree with the images."""
        async with self.db.read(consistent=True) as conn:
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
        return BatchSnapshot(batch=batch_record(row), images=[image_record(r) for r in images])


    async def retry_failed(self, batch_id: str, *, min_interval_s: float = 0.0) -> RetryOutcome:
        """Put a batch's failed images whose failure a retry can help back to pending (reopening
        the batch); the others stay failed and are counted per code in ``skipped``.

        At most one retry per ``min_interval_s`` seconds is accepted per batch, counted from the
        batches row (``retried_at``) so every replica agrees; a retry inside the interval changes
        nothing and says how long to wait.
        """

        async def op(conn: AsyncConnection) -> RetryOutcome:
            batch = await self._lock_batch(conn, batch_id)
            now = self._now()
            if min_interval_s > 0 and batch.retried_at is not None:
                waited = (now - batch.retried_at).total_seconds()
                if waited < min_interval_s:
                    return RetryOutcome(retried=[], skipped={}, retry_after_s=min_interval_s - waited)
            await conn.execute(update(Batch).where(Batch.id == batch_id).values(retried_at=now))
            failed = (Image.batch_id == batch_id, Image.state == ImageState.FAILED.value)
            cannot_help = Image.code.in_(sorted(CANNOT_HELP_CODES))
            skipped = {
                code: count
                for code, count in (
                    await conn.execute(
                        select(Image.code, func.count()).where(*failed, cannot_help).group_by(Image.code)
                    )
                ).all()
            }
            rows = (
                await conn.execute(
                    update(Image)
                    .where(*failed, or_(Image.code.is_(None), ~cannot_help))
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
            return RetryOutcome(retried=[image_record(r) for r in rows], skipped=skipped, retried_at=now)

        return await self._write(op)

    async def forget_retry(self, batch_id: str, retried_at: datetime) -> None:
        """Undo the rate-limit mark of an accepted retry that could not be carried out (the
        announcement failed), unless a later retry has marked the batch since."""

        async def op(conn: AsyncConnection) -> None:
            await conn.execute(
                update(Batch).where(Batch.id == batch_id, Batch.retried_at == retried_at).values(retried_at=None)
            )

        await self._write(op)

    async def fail_missing_uploads(self, batch_id: str, *, reason: str) -> list[ProgressEvent]:
        """Fail each file the batch declared that no upload ever arrived for; returns the events.

        The caller decides when waiting is over (the upload links have expired). Each missing
        file gets a failed image row with code ``upload_missing`` and no etag, counted and
        announced like any failure, so the batch can complete; an upload arriving after all is a
        new version of the key and supersedes the row.
        """

        async def op(conn: AsyncConnection) -> list[ProgressEvent]:
            batch = await self._lock_batch(conn, batch_id)
            if batch.state is not BatchState.OPEN:
                return []
            missing = await declared_not_uploaded(conn, batch_id)
            if not missing:
                return []
            now = self._now()
            rows = (
                await conn.execute(
                    insert(Image).returning(*Image.__table__.c),
                    [
                        {
                            "batch_id": batch_id,
                            "bucket": batch.input_bucket,
                            "key": input_key(batch_id, name),
                            "name": name,
                            "etag": "",
                            "size": size,
                            "state": ImageState.FAILED.value,
                            "attempts": 0,
                            "reason": reason,
                            "code": UPLOAD_MISSING,
                            "created_at": now,
                            "updated_at": now,
                            "finished_at": now,
                        }
                        for name, size in missing
                    ],
                )
            ).all()
            await conn.execute(
                update(Batch).where(Batch.id == batch_id).values(total=Batch.total + len(rows), updated_at=now)
            )
            events = [
                await self._append(conn, batch_id, EventType.IMAGE_FAILED, image_record(row), failed=1)
                for row in sorted(rows, key=lambda r: r.name)
            ]
            return events + await self._maybe_complete(conn, batch_id, idle_cutoff=None)

        return await self._write(op)
