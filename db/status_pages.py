"""One page of a batch's status: the batch, its counters and a slice of its images by name.

A status answer used to hold every image of a batch, each with a signed result link: 1,000 images
cost ingest 0.2-0.3 s of event-loop time per request. A page holds at most ``limit`` entries, in
name order, starting after the cursor's name; declared files and uploaded images are merged by
name (a declared file without an upload is ``awaiting_upload``; an upload nobody declared, as
direct uploads are, appears under its own name).

Names are compared as code points on every database (SQLite's BINARY collation does; PostgreSQL
is asked for ``COLLATE "C"``), so the database's order, the cursor and Python's order agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, exists, func, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from db.batches import DeclaredFile
from db.connection import Database
from db.models import Batch, BatchFile, Image
from db.records import BatchRecord
from db.transactions import batch_record
from photoenhance.contracts.states import ImageState

__all__ = ["ImageStatus", "StatusPage", "StatusPages"]


@dataclass(frozen=True)
class ImageStatus:
    """What a status page says about an image: only the columns it shows.

    Not a whole :class:`~db.records.ImageRecord`: building those (datetimes, the JSON report) for
    500 rows took ~45 ms of the event loop per page; these few columns take a fraction of that.
    """

    name: str
    state: ImageState
    size: int
    reason: str | None
    code: str | None
    output_key: str | None
    #: The quality level it was routed to (None before routing).
    level: str | None = None


@dataclass(frozen=True)
class StatusPage:
    """A batch and the entries of one page, read from one snapshot."""

    batch: BatchRecord
    #: (name, declared file or None, current image or None), in name order, at most ``limit``.
    entries: list[tuple[str, DeclaredFile | None, ImageStatus | None]]
    #: Declared files of the whole batch that have no upload yet.
    awaiting_upload: int
    #: Whether entries follow the last one of this page.
    more: bool
    #: Pending images of the whole batch by the level they are queued at.
    pending_by_level: dict[str, int]


class StatusPages:
    """Mixed into :class:`db.repository.Repository`."""

    db: Database

    async def status_page(self, batch_id: str, *, after: str | None, limit: int) -> StatusPage | None:
        """The batch and up to ``limit`` entries named after ``after`` (from the first when None)."""
        async with self.db.read(consistent=True) as conn:
            row = (await conn.execute(select(*Batch.__table__.c).where(Batch.id == batch_id))).one_or_none()
            if row is None:
                return None
            declared = await _declared_after(conn, batch_id, after, limit + 1)
            images = await _images_after(conn, batch_id, after, limit + 1)
            awaiting = await _awaiting_upload(conn, batch_id)
            pending = await _pending_by_level(conn, batch_id)
        by_name_declared = {f.name: f for f in declared}
        by_name_image = {image.name: image for image in images}  # later versions win, as ordered
        names = sorted(by_name_declared.keys() | by_name_image.keys())
        entries = [(name, by_name_declared.get(name), by_name_image.get(name)) for name in names[:limit]]
        return StatusPage(
            batch=batch_record(row), entries=entries, awaiting_upload=awaiting, more=len(names) > limit,
            pending_by_level=pending,
        )


def _by_code_point(conn: AsyncConnection, column: ColumnElement[str]) -> ColumnElement[str]:
    return column.collate("C") if conn.dialect.name == "postgresql" else column


async def _declared_after(conn: AsyncConnection, batch_id: str, after: str | None, limit: int) -> list[DeclaredFile]:
    name = _by_code_point(conn, BatchFile.name)
    query = select(BatchFile.name, BatchFile.original_name, BatchFile.declared_size, BatchFile.content_type).where(
        BatchFile.batch_id == batch_id
    )
    if after is not None:
        query = query.where(name > after)
    rows = (await conn.execute(query.order_by(name).limit(limit))).all()
    return [DeclaredFile(*row) for row in rows]


async def _images_after(conn: AsyncConnection, batch_id: str, after: str | None, limit: int) -> list[ImageStatus]:
    name = _by_code_point(conn, Image.name)
    query = select(Image.name, Image.state, Image.size, Image.reason, Image.code, Image.output_key, Image.level).where(
        Image.batch_id == batch_id, Image.state != ImageState.SUPERSEDED.value
    )
    if after is not None:
        query = query.where(name > after)
    rows = (await conn.execute(query.order_by(name, Image.id).limit(limit))).all()
    return [ImageStatus(r.name, ImageState(r.state), r.size, r.reason, r.code, r.output_key, r.level) for r in rows]


async def _pending_by_level(conn: AsyncConnection, batch_id: str) -> dict[str, int]:
    query = (
        select(Image.level, func.count())
        .where(Image.batch_id == batch_id, Image.state == ImageState.PENDING.value, Image.level.is_not(None))
        .group_by(Image.level)
    )
    return {level: int(n) for level, n in (await conn.execute(query)).all()}


async def _awaiting_upload(conn: AsyncConnection, batch_id: str) -> int:
    uploaded = exists().where(
        and_(
            Image.batch_id == BatchFile.batch_id,
            Image.name == BatchFile.name,
            Image.state != ImageState.SUPERSEDED.value,
        )
    )
    query = select(func.count()).select_from(BatchFile).where(BatchFile.batch_id == batch_id, ~uploaded)
    return int((await conn.execute(query)).scalar_one())
