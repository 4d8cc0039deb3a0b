"""Cancelling a batch: unclaimed images are never processed, in-flight ones finish, and the batch
ends ``cancelled`` with a ``batch.cancelled`` event once the last of them is final.

The end itself (``cancelling`` -> ``cancelled``) happens where every image reaches its final state,
in :meth:`db.event_log.EventLog._maybe_complete`, so the event comes after the last in-flight
image's event, in the same transaction as that image's change.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from db.event_log import EventLog
from db.models import Batch, Image
from db.records import BatchRecord
from db.transactions import declared_not_uploaded
from photoenhance.contracts.progress import ProgressEvent
from photoenhance.contracts.states import CANCELLED_CODE, BatchState, ImageState

__all__ = ["BatchAlreadyCompleted", "CancelOperations", "Cancellation"]

_REASON = "the batch was cancelled before this image was processed"


class BatchAlreadyCompleted(Exception):
    """The batch completed before it could be cancelled: there is nothing left to stop."""


@dataclass(frozen=True)
class Cancellation:
    """What a cancel request did."""

    batch: BatchRecord
    #: Images that will not be processed because of this request.
    cancelled: int
    #: Events appended (``batch.cancelled`` when nothing was in flight).
    events: list[ProgressEvent]
    #: The batch had been cancelled before; this request changed nothing.
    repeated: bool = False


class CancelOperations(EventLog):
    """The cancel request of the ingest API."""

    async def cancel_batch(self, batch_id: str) -> Cancellation:
        """Cancel a batch: pending images, and declared files not uploaded yet, become ``cancelled``
        (final, counted in ``cancelled``); processing ones are left to finish. Raises
        :class:`BatchAlreadyCompleted` for a completed batch and
        :class:`~db.transactions.UnknownBatch` for an unknown one; a second cancel is a no-op
        (``repeated``)."""

        async def op(conn: AsyncConnection) -> Cancellation:
            batch = await self._lock_batch(conn, batch_id)
            if batch.state in (BatchState.CANCELLING, BatchState.CANCELLED):
                return Cancellation(batch=batch, cancelled=0, events=[], repeated=True)
            if batch.state is BatchState.COMPLETED:
                raise BatchAlreadyCompleted(batch_id)
            now = self._now()
            cancelled = (
                await conn.execute(
                    update(Image)
                    .where(Image.batch_id == batch_id, Image.state == ImageState.PENDING.value)
                    .values(
                        state=ImageState.CANCELLED.value,
                        reason=_REASON,
                        code=CANCELLED_CODE,
                        finished_at=now,
                        updated_at=now,
                    )
                )
            ).rowcount
            # Declared files whose upload the batch has not seen yet will not be processed either:
            # each gets a cancelled row (no etag), so counts add up to what was declared. Their
            # uploads, when they are announced, find the batch cancelled and are ignored.
            unseen = await declared_not_uploaded(conn, batch_id)
            if unseen:
                await conn.execute(
                    insert(Image),
                    [
                        {
                            "batch_id": batch_id,
                            "bucket": batch.input_bucket,
                            "key": f"{batch_id}/{name}",
                            "name": name,
                            "etag": "",
                            "size": size,
                            "state": ImageState.CANCELLED.value,
                            "attempts": 0,
                            "reason": _REASON,
                            "code": CANCELLED_CODE,
                            "created_at": now,
                            "updated_at": now,
                            "finished_at": now,
                        }
                        for name, size in unseen
                    ],
                )
            cancelled += len(unseen)
            await conn.execute(
                update(Batch)
                .where(Batch.id == batch_id)
                .values(
                    total=Batch.total + len(unseen),
                    cancelled=Batch.cancelled + cancelled,
                    state=BatchState.CANCELLING.value,
                    updated_at=now,
                )
            )
            # Nothing in flight: the batch ends now, with its event.
            events = await self._maybe_complete(conn, batch_id, idle_cutoff=None)
            return Cancellation(batch=await self._load_batch(conn, batch_id), cancelled=cancelled, events=events)

        return await self._write(op)
