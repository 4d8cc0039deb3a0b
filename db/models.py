"""Tables: batches, the files a batch declared, image versions and the per-batch event log.

The schema is owned by the Alembic migrations in ``db/migrations``; these classes describe it for
queries and must match the latest revision (a test compares them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "Batch", "BatchFile", "Event", "Image", "RateCounter", "UTCDateTime", "WebhookDelivery",
           "WebhookRefusal", "WebhookSubscription", "WorkerRow", "utcnow"]

#: The predicates of the two partial unique indexes of ``images``, as migration 0007 writes them.
_CURRENT_VERSION_WHERE = "state IN ('pending', 'processing', 'completed', 'failed')"
_HOLDS_RESULT_KEY_WHERE = "state IN ('processing', 'completed') AND output_key IS NOT NULL"

#: A 64-bit id on PostgreSQL; SQLite only auto-increments a column declared INTEGER.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; pass a timezone-aware value")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of every table."""


class Batch(Base):
    """A group of uploads under one key prefix, with its counters and event sequence."""

    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_quota_subject_state", "quota_subject", "state"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="open")
    #: ``api`` (created by the ingest API) or ``direct`` (first seen in a bucket notification).
    source: Mapped[str] = mapped_column(String(16))
    input_bucket: Mapped[str] = mapped_column(String(63))
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: How many images the batch will hold, when known (API batches, manifests).
    expected_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: SHA-256 of the batch token handed to the creator; the token itself is never stored.
    token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: Distinct keys registered (a re-upload of a key counts once).
    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    #: Sequence number of the batch's latest event; the next event gets ``last_seq + 1``.
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_upload_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: Whose quota the batch counts against (``key:<hash>`` or ``addr:<address>``); None if none.
    quota_subject: Mapped[str | None] = mapped_column(String(80), nullable=True)
    #: Images not processed because the batch was cancelled before a worker claimed them.
    cancelled: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: When a retry of the batch's failed images was last accepted (RETRY_MIN_INTERVAL_S counts from it).
    retried_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RateCounter(Base):
    """How much of one quota a subject used in one fixed window (shared by every ingest replica)."""

    __tablename__ = "rate_counters"

    subject: Mapped[str] = mapped_column(String(80), primary_key=True)
    #: ``batches``, ``files`` or ``bytes``.
    counter: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: Start of the window, in seconds since the epoch.
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger)


class WebhookSubscription(Base):
    """Where a batch's progress events are POSTed, which ones, and the sealed signing secret."""

    __tablename__ = "webhook_subscriptions"

    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    #: Event types delivered (``image.completed``, ...).
    events: Mapped[list[str]] = mapped_column(JSON)
    #: The secret, AES-GCM sealed under WEBHOOK_SECRETS_KEY (see webhooks.signing).
    sealed_secret: Mapped[str] = mapped_column(String(255))
    #: When the receiver answered 410 Gone: nothing more is delivered to it.
    gone_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookRefusal(Base):
    """Why a direct batch's manifest webhook was refused: nobody was there to answer, so it is kept
    for the deliveries endpoint to show (the batch itself goes on without a webhook)."""

    __tablename__ = "webhook_refusals"

    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True)
    #: The code the API would answer with (``webhook_url_not_public``, ``webhook_secret_invalid``, ...).
    code: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookDelivery(Base):
    """One event's delivery to its batch's webhook: where it stands (one row per event)."""

    __tablename__ = "webhook_deliveries"

    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The ``webhook-id`` header: the same on every attempt, for receivers to de-duplicate by.
    webhook_id: Mapped[str] = mapped_column(String(96))
    event_type: Mapped[str] = mapped_column(String(32))
    #: ``retrying``, ``delivered``, ``dead`` (retries ran out) or ``gone`` (the receiver said 410).
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    first_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class BatchFile(Base):
    """A file the ingest API promised an upload slot for (name, size and type as declared)."""

    __tablename__ = "batch_files"

    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True)
    #: The safe name inside the batch prefix that the upload was presigned for.
    name: Mapped[str] = mapped_column(String(1024), primary_key=True)
    #: What the client called the file, for display.
    original_name: Mapped[str] = mapped_column(Text)
    declared_size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(255))


class Image(Base):
    """One version (bucket, key, etag) of an uploaded image and where its processing stands."""

    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("bucket", "key", "etag", name="uq_images_version"),
        Index("ix_images_batch_state", "batch_id", "state"),
        # Status pages: a batch's images in name order (migration 0003).
        Index("ix_images_batch_name", "batch_id", "name"),
        Index("ix_images_bucket_key", "bucket", "key"),
        Index("ix_images_state_lease", "state", "lease_expires_at"),
        # One current version per key, and one holder per result key of a batch (migration 0007):
        # the database itself refuses what two workers' concurrent starts could otherwise both
        # decide, so the worker's path need not read the keys again under the batch lock.
        Index("uq_images_current_key", "bucket", "key", unique=True,
              postgresql_where=text(_CURRENT_VERSION_WHERE), sqlite_where=text(_CURRENT_VERSION_WHERE)),
        Index("uq_images_result_key", "batch_id", "output_key", unique=True,
              postgresql_where=text(_HOLDS_RESULT_KEY_WHERE), sqlite_where=text(_HOLDS_RESULT_KEY_WHERE)),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    bucket: Mapped[str] = mapped_column(String(63))
    key: Mapped[str] = mapped_column(String(1024))
    #: The key without its batch prefix.
    name: Mapped[str] = mapped_column(String(1024))
    etag: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))
    #: How many times a worker has claimed this version.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    output_key: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: When the object store accepted the upload (from the notification or a listing).
    uploaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: The quality level the router queued it at (None: registered before routing existed).
    level: Mapped[str | None] = mapped_column(String(16), nullable=True)


class Event(Base):
    """A batch's progress event log; ``seq`` runs 1, 2, 3... without gaps within a batch."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("batch_id", "seq", name="uq_events_batch_seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(32))
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id", ondelete="SET NULL"), nullable=True)
    #: The event as the contract's ``ProgressEvent.to_dict`` writes it.
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WorkerRow(Base):
    """A live processor worker and what it serves, kept up to date by its heartbeat
    (:mod:`processor.heartbeat`); removed when the worker stops cleanly."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    #: Quality levels the worker serves, e.g. ``["balanced", "fast"]``.
    levels: Mapped[list[str]] = mapped_column(JSON)
    #: ``cpu``, ``cuda:0`` ...
    device: Mapped[str] = mapped_column(String(32))
    #: What the device is (``NVIDIA H200``, the CPU's model name).
    device_name: Mapped[str] = mapped_column(String(255))
    engine_version: Mapped[str] = mapped_column(String(64))
    #: Measured seconds per input megapixel, per level (``{"fast": 0.02}``); empty until measured.
    speeds: Mapped[dict[str, float]] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_beat_at: Mapped[datetime] = mapped_column(UTCDateTime)
