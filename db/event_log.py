"""The progress-event log: each event appended in the transaction of the change it reports, with
the batch's next sequence number and counters moved together; and batch completion, which is
itself an event."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from db.models import Batch, Event, Image
from db.records import ImageRecord
from db.transactions import UNFINISHED, Transactions, batch_record
from photoenhance.contracts.progress import EventType, ImageProgress, ProgressEvent
from photoenhance.contracts.states import BatchState

__all__ = ["EventLog"]


class EventLog(Transactions):
    """Appending, reading and replaying a batch's events."""

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
        batch = batch_record(row)
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
        if batch.state is BatchState.CANCELLING:
            return await self._end_cancel_if_drained(conn, batch_id)
        if batch.state is not BatchState.OPEN or batch.total == 0:
            return []
        if batch.completed + batch.failed < batch.total:
            return []
        unfinished = (
            await conn.execute(
                select(func.count()).select_from(Image).where(
                    Image.batch_id == batch_id, Image.state.in_(UNFINISHED)
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

    async def _end_cancel_if_drained(self, conn: AsyncConnection, batch_id: str) -> list[ProgressEvent]:
        """A cancelling batch whose last in-flight image is final ends ``cancelled`` (see db.cancel)."""
        unfinished = (
            await conn.execute(
                select(func.count()).select_from(Image).where(Image.batch_id == batch_id, Image.state.in_(UNFINISHED))
            )
        ).scalar_one()
        if unfinished:
            return []
        now = self._now()
        await conn.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(state=BatchState.CANCELLED.value, completed_at=now, updated_at=now)
        )
        return [await self._append(conn, batch_id, EventType.BATCH_CANCELLED, None)]

