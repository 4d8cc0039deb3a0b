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
    Integer,
    String,
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
    "GROUP_BATCH_PREFIX",
    "IMAGE_BATCHES",
    "INSERT_EVENT",
    "INSERT_IMAGE",
    "INSERT_IMAGES_IF_FREE",
    "KEY_VERSIONS_AND_HOLDERS",
    "LOCK_BATCH",
    "OPEN_AND_COUNT_BATCH",
    "REGISTER_IN_BATCH",
    "WRITE_GROUP",
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

#: A completion: only while ``owner`` holds the image (compare-and-set), of the batch locked for
#: it, and of the name ``image_name`` when that is not None (its caller's idea of the image).
COMPLETE_IMAGE = (
    update(Image)
    .where(
        Image.id == bindparam("image_id"),
        Image.batch_id == bindparam("image_batch"),  # not "batch_id": a column's name is reserved in SET
        Image.name == func.coalesce(bindparam("image_name", type_=String), Image.name),
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


def _counted_batch(batch_id: Any, added: Any, completed: Any, events: Any, last_upload: Any) -> Any:
    """The update that locks a batch (``batch_id``, its id) and moves it on by what one transaction of the
    worker's path did before it: ``added`` new keys, ``completed`` images completed, ``events``
    events logged, ``last_upload`` the latest upload among the new keys (None: none); it returns
    the batch as it now stands. With new keys the batch opens again and its last upload moves on,
    unless it is being cancelled: it keeps that state, for the caller to see and roll back. Every
    expression on the right reads the row as it was, so ``state`` in the conditions is the old one."""
    return (
        update(Batch)
        .where(Batch.id == batch_id)
        .values(
            total=Batch.total + added,
            completed=Batch.completed + completed,
            last_seq=Batch.last_seq + events,
            state=case((and_(added > 0, _TAKES_UPLOADS), BatchState.OPEN.value), else_=Batch.state),
            completed_at=case((and_(added > 0, _TAKES_UPLOADS), None), else_=Batch.completed_at),
            last_upload_at=case(
                (
                    and_(
                        last_upload.is_not(None),
                        or_(Batch.last_upload_at.is_(None), Batch.last_upload_at < last_upload),
                    ),
                    last_upload,
                ),
                else_=Batch.last_upload_at,
            ),
            updated_at=bindparam("now", type_=Batch.updated_at.type),
        )
        .returning(*Batch.__table__.c)
    )


#: Lock a batch and move it on by what one transaction of the worker's path did before it
#: (:func:`_counted_batch`), its parameters ``batch_id``, ``added``, ``completed``, ``events`` and
#: ``last_upload``.
OPEN_AND_COUNT_BATCH = _counted_batch(
    bindparam("batch_id"), bindparam("added"), bindparam("completed"), bindparam("events"),
    bindparam("last_upload", type_=Batch.last_upload_at.type),
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


def _logged_completions(counted: Any, completions: Any, n: Any, image_id: Any, event: Any, count: Any) -> Any:
    """The insert (a CTE) of the ``image.completed`` events of the ``count`` images that ``counted``
    (the batch update's CTE) counted as completed: one per row of ``completions`` (a FROM), ``n``
    its place (1, 2, ...), ``image_id`` its image and ``event`` its ``ProgressEvent.to_dict()``
    without number or counts (JSONB). The events are the last ``count`` numbers of the batch as
    the update left it, in order; each one's counts are the batch's as of that event."""
    seq = counted.c.last_seq - count + n
    counts = func.jsonb_build_object(
        literal_column("'total'"), counted.c.total,
        literal_column("'completed'"), counted.c.completed - count + n,
        literal_column("'failed'"), counted.c.failed,
        literal_column("'expected'"), counted.c.expected_count,
        literal_column("'cancelled'"), counted.c.cancelled,
    )
    payload = event.op("||")(func.jsonb_build_object(literal_column("'seq'"), seq, literal_column("'counts'"), counts))
    return insert(Event).from_select(
        ["batch_id", "seq", "type", "image_id", "payload", "created_at"],
        select(
            counted.c.id,
            seq,
            literal_column(f"'{EventType.IMAGE_COMPLETED.value}'"),
            image_id,
            cast(payload, JSON),
            bindparam("now", type_=Event.created_at.type),
        ).select_from(counted.join(completions, true())),
    ).cte("logged")


def _count_and_log_completions() -> Any:
    """:data:`COUNT_AND_LOG_COMPLETIONS`, built once."""
    counted = OPEN_AND_COUNT_BATCH.cte("counted")
    # One element per completion, in order: {"image_id": ..., "event": ProgressEvent.to_dict()}.
    completions = (
        func.jsonb_array_elements(bindparam("completions", type_=JSONB))
        .table_valued(column("value", JSONB), with_ordinality="n")
        .render_derived(name="completion")
    )
    logged = _logged_completions(
        counted, completions, completions.c.n, cast(completions.c.value["image_id"].astext, BigInteger),
        completions.c.value["event"], bindparam("events"),
    )
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


#: The names of what :data:`WRITE_GROUP` returns of the batch: its columns, each with this prefix.
GROUP_BATCH_PREFIX = "locked_"


def _write_group() -> Any:
    """:data:`WRITE_GROUP`, built once."""
    now = bindparam("now", type_=Image.updated_at.type)
    # Not "batch_id", nor any other column's name: an UPDATE takes a parameter named as a column
    # of its table as a value to SET.
    batch_id = bindparam("group_batch", type_=String)
    # The new keys, one object each: see WRITE_GROUP for their fields.
    starts = (
        func.jsonb_to_recordset(bindparam("starts", type_=JSONB))
        .table_valued(
            column("n", Integer), column("bucket", String), column("key", String), column("name", String),
            column("etag", String), column("size", BigInteger), column("owner", String),
            column("lease_until", Image.lease_expires_at.type), column("output_key", String),
            column("uploaded_at", Image.uploaded_at.type), column("level", String),
        )
        .render_derived(name="start", with_types=True)
    )
    inserted = (
        postgresql.insert(Image)
        .from_select(
            ["batch_id", "bucket", "key", "name", "etag", "size", "state", "attempts", "lease_owner",
             "lease_expires_at", "output_key", "uploaded_at", "created_at", "updated_at", "level"],
            select(
                batch_id, starts.c.bucket, starts.c.key, starts.c.name, starts.c.etag,
                starts.c.size, literal_column(f"'{_PROCESSING}'"), literal_column("1"), starts.c.owner,
                starts.c.lease_until, starts.c.output_key, starts.c.uploaded_at, now, now, starts.c.level,
            ).order_by(starts.c.n),
        )
        .on_conflict_do_nothing()
        .returning(*_IMAGE)
        .cte("inserted")
    )
    completions = (
        func.jsonb_to_recordset(bindparam("completions", type_=JSONB))
        .table_valued(
            column("n", Integer), column("image_id", BigInteger), column("owner", String), column("name", String),
            column("output_key", String), column("report", Image.report.type), column("event", JSONB),
        )
        .render_derived(name="completion", with_types=True)
    )
    completed = (
        update(Image)
        .where(
            Image.id == completions.c.image_id,
            Image.batch_id == batch_id,
            Image.name == completions.c.name,  # the name its event was built with
            Image.state == _PROCESSING,
            Image.lease_owner == completions.c.owner,
        )
        .values(
            state=ImageState.COMPLETED.value, output_key=completions.c.output_key, report=completions.c.report,
            reason=None, code=None, lease_owner=None, lease_expires_at=None, finished_at=now, updated_at=now,
        )
        .returning(Image.id, completions.c.n, completions.c.event)
        .cte("completed")
    )
    added = select(func.count()).select_from(inserted).scalar_subquery()
    done = select(func.count()).select_from(completed).scalar_subquery()
    last_upload = select(func.max(func.coalesce(inserted.c.uploaded_at, now))).scalar_subquery()
    # Locked last: its values read the two CTEs above, so they have run when the row is locked.
    counted = _counted_batch(batch_id, added, done, done, last_upload).cte("counted")
    logged = _logged_completions(counted, completed, completed.c.n, completed.c.id, completed.c.event,
                                 bindparam("completions_n", type_=Integer))
    starts_n, completions_n = bindparam("starts_n", type_=Integer), bindparam("completions_n", type_=Integer)
    holds = and_(
        counted.c.id.is_not(None),  # the batch exists (no row: the checks below are NULL too)
        added == starts_n,  # no start refused by a unique index: its key or result key was free
        done == completions_n,  # every claim still held
        or_(  # the starts were decided from the batch's options as they still are, and it takes uploads
            starts_n == 0,
            and_(
                counted.c.state != BatchState.CANCELLING.value, counted.c.state != BatchState.CANCELLED.value,
                cast(counted.c.options, JSONB) == bindparam("decided_options", type_=JSONB),
            ),
        ),
        or_(  # the completions end neither the batch nor its cancel (as db.event_log would see it
            # without an idle cutoff): that is written with its event, the general way
            completions_n == 0,
            and_(
                counted.c.state != BatchState.CANCELLING.value,
                or_(counted.c.state != BatchState.OPEN.value, counted.c.total == 0,
                    counted.c.completed + counted.c.failed < counted.c.total, counted.c.expected_count.is_(None),
                    counted.c.completed + counted.c.failed < counted.c.expected_count),
            ),
        ),
    )
    one = select(literal_column("1").label("one")).subquery("one")
    return (
        select(*inserted.c, *(c.label(GROUP_BATCH_PREFIX + c.name) for c in counted.c))
        .select_from(one.outerjoin(counted, true()).outerjoin(inserted, true()))
        .where(func.photoenhance_refuse_unless(holds, literal_column("'the group is not the common case'")))
        .add_cte(logged)
    )


#: PostgreSQL only: a group of the worker's path of the common kind, all of one batch, as one
#: statement, run in an implicit transaction (``Database.statement``): new keys inserted claimed
#: with their first candidate result key, claims completed by compare-and-set, then the batch
#: locked and counted and the completions' events logged (as :data:`COUNT_AND_LOG_COMPLETIONS`).
#: Why: the batch row is locked from that update to the statement's commit, with no round trip
#: to the worker in between, and the group costs one round trip instead of five or more.
#:
#: Parameters: ``group_batch`` (the batch's id), ``now``; ``starts``, a JSON list of {n, bucket,
#: key, name, etag, size, owner, lease_until, output_key, uploaded_at, level} (n from 1,
#: timestamps ISO 8601 with their zone), ``starts_n`` its length and ``decided_options`` the
#: batch's options they were decided from;
#: ``completions``, a JSON list of {n, image_id, owner, name, output_key, report, event} (event:
#: ``ProgressEvent.to_dict()`` of its ``image.completed``, numbered and counted here), and
#: ``completions_n``; both lists such that :func:`jsonb_can_hold` them.
#:
#: What the worker checked before committing, the statement checks itself and, where it does not
#: hold, aborts with SQLSTATE ``PE001`` (``photoenhance_refuse_unless``, migration 0008), which
#: undoes all of it: a start refused by a unique index, a claim lost, a batch gone, ended, or whose
#: options changed, or completions that would end the batch or its cancel (the caller writes those
#: the general way, with the ``batch.completed`` event in the same transaction). It returns one row
#: per new version (at least one row): the image's columns, then the batch's as the statement left
#: it, each named with :data:`GROUP_BATCH_PREFIX`; the image's are NULL when there were no starts.
WRITE_GROUP = _write_group()
