"""The life cycles of an image and of a batch."""

from __future__ import annotations

from enum import Enum

from photoenhance.contracts.failures import FailureCode

__all__ = ["CANCELLED_CODE", "UPLOAD_MISSING", "BatchState", "ImageState"]

#: Failure code of a file declared to the ingest API whose upload never arrived before its upload
#: links expired. A retry cannot help (there is nothing to process); a late upload supersedes it.
UPLOAD_MISSING = FailureCode.UPLOAD_MISSING

#: Code of an image its batch's cancel kept from processing (or an upload that came after it).
CANCELLED_CODE = FailureCode.CANCELLED


class ImageState(str, Enum):
    """Where one version (bucket, key, etag) of an uploaded image stands."""

    #: Announced (by a notification, the reconciler or the ingest API) and waiting for a worker.
    PENDING = "pending"
    #: Claimed by a worker whose lease has not expired.
    PROCESSING = "processing"
    #: The result object is written and recorded. Final.
    COMPLETED = "completed"
    #: Refused or failed for good, with a reason. Final until someone asks for a retry.
    FAILED = "failed"
    #: A newer version of the same key arrived; this one no longer counts. Final.
    SUPERSEDED = "superseded"
    #: Its batch was cancelled before a worker claimed it (or it arrived afterwards). Final.
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """Whether no worker will touch the image again without being asked to."""
        return self in {ImageState.COMPLETED, ImageState.FAILED, ImageState.SUPERSEDED, ImageState.CANCELLED}


class BatchState(str, Enum):
    """Where a batch stands."""

    #: Uploads may still arrive or images are still being processed.
    OPEN = "open"
    #: Every image the batch expects is final (some may have failed). A new upload reopens it.
    COMPLETED = "completed"
    #: Cancelled while images were in flight: those finish, nothing else is processed.
    CANCELLING = "cancelling"
    #: Cancelled, and nothing is in flight any more. Final: later uploads are ignored.
    CANCELLED = "cancelled"
