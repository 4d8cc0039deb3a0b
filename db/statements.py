"""The statements of the per-image hot path, built once with bind parameters.

Why: building a Core statement (``select(...).where(...)``) costs more CPU than running it once
its compiled form is cached: every call coerced its clauses and walked them for a cache key. A
statement object built once keeps its cache key, so each image pays for the parameters only.
Every value that varies is a :func:`bindparam`; the column types come with them, so timestamps
pass through :class:`db.models.UTCDateTime` as everywhere else.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import (
    BigInteger,
    and_,
    bindparam,
    case,
    cast,
    column,
    func,
    insert,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSON, JSONB

from db.models import Batch, Event, Image
from photoenhance.contracts.progress import EventType
from photoenhance.contracts.states import BatchState, ImageState

__all__ = [
    "BATCHES",
    "CLAIM_IMAGE",
    "COMPLETE_IMAGE",
    "COUNT_AND_LOG_COMPLETIONS",
    "IMAGE_BATCHES",
    "INSERT_EVENT",
    "INSERT_IMAGE",
    "INSERT_IMAGES_IF_FREE",
    "KEY_VERSIONS_AND_HOLDERS",
    "LOCK_BATCH",
    "OPEN_AND_COUNT_BATCH",
    "REGISTER_IN_BATCH",
    "jsonb_can_hold",
]

_PROCESSING = ImageState.PROCESSING.value
_IMAGE = tuple(Image.__table__.c)

#: Lock a batch row (``FOR UPDATE`` on PostgreSQL; SQLite's write transaction already excludes).
LOCK_BATCH = select(*Batch.__table__.c).where(Batch.id == bindparam("batch_id")).with_for_update()

#: Some batches as they stand, unlocked (what the worker's path decides from before it locks).
BATCHES = select(*Batch.__table__.c).where(Batch.id.in_(bindparam("batch_ids", expanding=True)))

#: Every version of one key (the one being registered among them, if known), and in the same
#: read the images of other keys of the batch that hold one of two candidate result keys
#: (``first_key``, ``second_key``; None for none) as their result key (processing or completed):
#: the caller tells them apart by key. Two slots, not an expanding list: a list's length is
#: rendered into the SQL at every execution, which cost more CPU than the rest of the statement.
KEY_VERSIONS_AND_HOLDERS = select(*_IMAGE).where(
    or_(
        and_(Image.bucket == bindparam("bucket"), Image.key == bindparam("key")),
        and_(
            Image.batch_id == bindparam("batch_id"),
            Image.key != bindparam("key"),
            or_(Image.output_key == bindparam("first_key"), Image.output_key == bindparam("second_key")),
            or_(Image.state == _PROCESSING, Image.state == ImageState.COMPLETED.value),
        ),
    )
)

#: A new version, inserted in its first state (claimed at once when it is the current one).
INSERT_IMAGE = insert(Image).returning(*_IMAGE)

#: New current versions, one row per parameter set (a multi-row insert), each skipped, and not
#: returned, where one of the database's unique indexes refuses it: its version is known, its
#: key has a current version, or another key of its batch holds its result key (migration 0007).
#: By dialect name: each dialect writes the clause with its own construct.
INSERT_IMAGES_IF_FREE = {
    name: dialect_insert(Image).on_conflict_do_nothing().returning(*_IMAGE)
    for name, dialect_insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}

#: A batch's counters after a new key (``added`` 1) or a new version of a known key (0) arrived.
REGISTER_IN_BATCH = (
    update(Batch)
    .where(Batch.id == bindparam("batch_id"))
    .values(
        total=Batch.total + bindparam("added"),
        state=BatchState.OPEN.value,
        completed_at=None,
        last_upload_at=bindparam("last_upload", type_=Batch.last_upload_at.type),
        updated_at=bindparam("now", type_=Batch.updated_at.type),
    )
)

#: Claim a known version: pending, or processing under a lease that has run out, with the result
#: key this attempt holds (None: none is free; the worker reserves one or fails the image).
CLAIM_IMAGE = (
    update(Image)
    .where(
        Image.id == bindparam("image_id"),
        or_(
            Image.state == ImageState.PENDING.value,
            and_(Image.state == _PROCESSING, Image.lease_expires_at < bindparam("now")),
        ),
    )
    .values(
        state=_PROCESSING,
        lease_owner=bindparam("owner"),
        lease_expires_at=bindparam("lease_until", type_=Image.lease_expires_at.type),
        attempts=Image.attempts + 1,
        output_key=bindparam("output_key"),
        updated_at=bindparam("now", type_=Image.updated_at.type),
    )
    .returning(*_IMAGE)
)

#: The batch of each of some images.
IMAGE_BATCHES = select(Image.id, Image.batch_id).where(Image.id.in_(bindparam("image_ids", expanding=True)))

#: A completion: only while ``owner`` holds the image (compare-and-set), of the batch locked for it.
COMPLETE_IMAGE = (
    update(Image)
    .where(
        Image.id == bindparam("image_id"),
        Image.batch_id == bindparam("image_batch"),  # not "batch_id": a column's name is reserved in SET
        Image.state == _PROCESSING,
        Image.lease_owner == bindparam("owner"),
    )
    .values(
        state=ImageState.COMPLETED.value,
        output_key=bindparam("output_key"),
        report=bindparam("report", type_=Image.report.type),
        reason=None,
        code=None,
        lease_owner=None,
        lease_expires_at=None,
        finished_at=bindparam("now", type_=Image.finished_at.type),
        updated_at=bindparam("now", type_=Image.updated_at.type),
    )
    .returning(*_IMAGE)
)

#: Events, inserted with their sequence numbers (one row per parameter set).
INSERT_EVENT = insert(Event)

#: How many images of a batch still wait for an outcome.
COUNT_UNFINISHED = select(func.count()).select_from(Image).where(
    Image.batch_id == bindparam("batch_id"),
    Image.state.in_((ImageState.PENDING.value, _PROCESSING)),
)

#: A batch that takes uploads: neither being cancelled nor cancelled (two comparisons, not an IN
#: list, which would be rendered again at every execution).
_TAKES_UPLOADS = and_(Batch.state != BatchState.CANCELLING.value, Batch.state != BatchState.CANCELLED.value)

#: Lock a batch and move it on by what one transaction of the worker's path did before it (new
#: keys started, images completed, their events), in one statement that returns the batch as it
#: now stands. With new keys (``added`` > 0) the batch opens again and its last upload moves on,
#: unless it is being cancelled: it keeps that state, for the caller to see and roll back. Every
#: expression on the right reads the row as it was, so ``state`` in the conditions is the old one.
OPEN_AND_COUNT_BATCH = (
    update(Batch)
    .where(Batch.id == bindparam("batch_id"))
    .values(
        total=Batch.total + bindparam("added"),
        completed=Batch.completed + bindparam("completed"),
        last_seq=Batch.last_seq + bindparam("events"),
        state=case(
            (and_(bindparam("added") > 0, _TAKES_UPLOADS), BatchState.OPEN.value),
            else_=Batch.state,
        ),
        completed_at=case(
            (and_(bindparam("added") > 0, _TAKES_UPLOADS), None),
            else_=Batch.completed_at,
        ),
        last_upload_at=case(
            (
                and_(
                    bindparam("last_upload", type_=Batch.last_upload_at.type).is_not(None),
                    or_(
                        Batch.last_upload_at.is_(None),
                        Batch.last_upload_at < bindparam("last_upload", type_=Batch.last_upload_at.type),
                    ),
                ),
                bindparam("last_upload", type_=Batch.last_upload_at.type),
            ),
            else_=Batch.last_upload_at,
        ),
        updated_at=bindparam("now", type_=Batch.updated_at.type),
    )
    .returning(*Batch.__table__.c)
)


def jsonb_can_hold(value: Any) -> bool:
    """Whether PostgreSQL's ``jsonb`` can hold ``value`` (JSON-able) exactly as ``json`` does:
    not when a string in it has a NUL or a lone surrogate, which ``jsonb`` refuses."""
    if isinstance(value, str):
        return _JSONB_REFUSES.search(value) is None
    if isinstance(value, dict):
        return all(jsonb_can_hold(k) and jsonb_can_hold(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(jsonb_can_hold(v) for v in value)
    return True


#: What ``jsonb`` refuses in a string: NUL, and UTF-16 surrogates (in a Python string only lone ones).
_JSONB_REFUSES = re.compile("[\x00\ud800-\udfff]")


def _count_and_log_completions() -> Any:
    """:data:`COUNT_AND_LOG_COMPLETIONS`, built once."""
    counted = OPEN_AND_COUNT_BATCH.cte("counted")
    # One element per completion, in order: {"image_id": ..., "event": ProgressEvent.to_dict()}.
    completions = (
        func.jsonb_array_elements(bindparam("completions", type_=JSONB))
        .table_valued(column("value", JSONB), with_ordinality="n")
        .render_derived(name="completion")
    )
    # The events are the last ``events`` numbers of the batch as the update left it, in order;
    # each one's counts are the batch's as of that event.
    seq = counted.c.last_seq - bindparam("events") + completions.c.n
    counts = func.jsonb_build_object(
        literal_column("'total'"), counted.c.total,
        literal_column("'completed'"), counted.c.completed - bindparam("completed") + completions.c.n,
        literal_column("'failed'"), counted.c.failed,
        literal_column("'expected'"), counted.c.expected_count,
        literal_column("'cancelled'"), counted.c.cancelled,
    )
    payload = completions.c.value["event"].op("||")(
        func.jsonb_build_object(literal_column("'seq'"), seq, literal_column("'counts'"), counts)
    )
    logged = insert(Event).from_select(
        ["batch_id", "seq", "type", "image_id", "payload", "created_at"],
        select(
            counted.c.id,
            seq,
            literal_column(f"'{EventType.IMAGE_COMPLETED.value}'"),
            cast(completions.c.value["image_id"].astext, BigInteger),
            cast(payload, JSON),
            bindparam("now", type_=Event.created_at.type),
        ).select_from(counted.join(completions, true())),
    ).cte("logged")
    return select(*counted.c).add_cte(logged)


#: PostgreSQL only: :data:`OPEN_AND_COUNT_BATCH` and, in the same statement, the ``image.completed``
#: events of the images it counts as completed (``completions``, a JSON list in order, which
#: :func:`jsonb_can_hold`; ``events`` and ``completed`` its length), numbered and counted from the
#: batch as the update left it. Why one statement: the batch is locked from this statement until
#: the commit, and every statement more under the lock is a round trip that each worker of the
#: batch waits for. The payload is the caller's ``ProgressEvent.to_dict()`` with ``seq`` and
#: ``counts`` set here, so it equals the events the caller builds from the batch returned (a test
#: compares them).
COUNT_AND_LOG_COMPLETIONS = _count_and_log_completions()
