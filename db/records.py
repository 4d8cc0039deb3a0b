"""Plain records the repository returns, so callers never hold live ORM objects or rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from photoenhance.contracts.progress import BatchCounts, ImageProgress
from photoenhance.contracts.states import BatchState, ImageState

if TYPE_CHECKING:
    from photoenhance.contracts.events import InvalidKey, ObjectCreated

__all__ = ["BatchRecord", "BatchSnapshot", "ImageRecord", "ImageVersion", "Registration", "StartedImage"]


@dataclass(frozen=True)
class BatchRecord:
    """A batch as stored."""

    id: str
    state: BatchState
    source: str
    input_bucket: str
    options: dict[str, Any]
    expected_count: int | None
    token_hash: str | None
    total: int
    completed: int
    failed: int
    last_seq: int
    created_at: datetime
    updated_at: datetime
    last_upload_at: datetime | None
    completed_at: datetime | None
    #: Whose quota the batch counts against, when it was created through the API.
    quota_subject: str | None = None
    #: Images left unprocessed because the batch was cancelled.
    cancelled: int = 0
    retried_at: datetime | None = None

    @property
    def counts(self) -> BatchCounts:
        """The counters as a progress event carries them."""
        return BatchCounts(
            total=self.total,
            completed=self.completed,
            failed=self.failed,
            expected=self.expected_count,
            cancelled=self.cancelled,
        )


@dataclass(frozen=True)
class ImageRecord:
    """One version of an uploaded image as stored."""

    id: int
    batch_id: str
    bucket: str
    key: str
    name: str
    etag: str
    size: int
    state: ImageState
    attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    reason: str | None
    code: str | None
    output_key: str | None
    report: dict[str, Any] | None
    uploaded_at: datetime | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    #: The quality level it was queued at, once routed.
    level: str | None = None

    def progress(self) -> ImageProgress:
        """The image as a progress event describes it."""
        return ImageProgress(
            name=self.name,
            state=self.state.value,
            output_key=self.output_key,
            reason=self.reason,
            code=self.code,
            report=dict(self.report or {}),
        )


@dataclass(frozen=True)
class ImageVersion:
    """What is known of an uploaded object when it is registered."""

    bucket: str
    batch_id: str
    key: str
    name: str
    etag: str
    size: int
    uploaded_at: datetime | None = None
    #: The quality level it is queued at (the router knows it; the pipeline registers without).
    level: str | None = None

    @classmethod
    def of(cls, record: ObjectCreated | InvalidKey, level: str | None = None) -> ImageVersion:
        """The version a bucket notification announces (its event time is the upload time), queued
        at ``level`` when the router has resolved one; for a refused key inside a batch, the version
        its refusal is recorded against."""
        assert record.batch_id is not None, "a key outside any batch prefix names no image"
        return cls(
            bucket=record.bucket,
            batch_id=record.batch_id,
            key=record.key,
            name=record.name,
            etag=record.etag,
            size=record.size,
            uploaded_at=record.event_time,
            level=level,
        )


@dataclass(frozen=True)
class Registration:
    """The outcome of registering an image version."""

    image: ImageRecord
    #: False when this (bucket, key, etag) was already known: a duplicate notification.
    created: bool
    #: Older versions of the same key this one replaced.
    superseded: tuple[int, ...] = ()


@dataclass(frozen=True)
class StartedImage:
    """What one write transaction before the work found and did (:meth:`start_image`): the
    version registered (or found), claimed when it could be, with its result key reserved."""

    #: The batch as locked by that transaction (options, counters).
    batch: BatchRecord
    #: The image version after the transaction: final, pending, or processing (claimed or not).
    image: ImageRecord
    #: The image as claimed by this owner; None when it was final, superseded or held by another.
    claimed: ImageRecord | None
    #: The candidates the result key was reserved from (from the batch's options).
    candidates: tuple[str, ...] = ()
    #: The reserved result key; None when not claimed or every candidate is held.
    output_key: str | None = None


@dataclass(frozen=True)
class BatchSnapshot:
    """A batch with the current version of each of its images."""

    batch: BatchRecord
    images: list[ImageRecord] = field(default_factory=list)
