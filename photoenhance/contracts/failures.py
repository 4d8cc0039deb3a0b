"""Failure codes and the errors that carry them: a stable machine-readable ``code`` and a plain-words ``reason``.

The codes are a public contract: they are stored with failed images, sent in progress events, used as
metric labels and shown by the page and the CLI. :class:`FailureCode` lists every one, and says for
each whether a retry can help (``POST /api/v1/batches/{id}/retry`` resets only those).

:class:`CodedError` is the one code-and-reason error base. :class:`ImageError` and its subclasses are
*permanent* failures of one image found by the engine: retrying the same bytes cannot succeed, so the
worker records the reason and moves on.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "CodedError",
    "CorruptImage",
    "FailureCode",
    "ImageError",
    "NotAnImage",
    "OutputTooLarge",
    "ProcessingFailed",
    "QualityNotLoaded",
    "TooManyPixels",
    "UnsupportedImage",
    "image_error_from_dict",
    "retry_can_help",
    "why_retry_cannot_help",
]


class FailureCode(StrEnum):
    """Why an image failed (final codes) or why an attempt was put off (transient codes).

    A ``StrEnum``: each member is its code string, so it is stored, logged and sent as that string.
    """

    # -- the bytes themselves: the same bytes fail the same way -----------------------------------
    #: The bytes are no image at all: empty, text, or a format nobody would call a picture.
    NOT_AN_IMAGE = "not_an_image"
    #: A real picture in a format the engine does not decode (GIF, TIFF, HEIC, SVG ...).
    UNSUPPORTED_FORMAT = "unsupported_format"
    #: The header names a supported format but the data is damaged or truncated.
    CORRUPT_IMAGE = "corrupt_image"
    #: The header announces more pixels than MAX_INPUT_PIXELS; nothing was decoded.
    TOO_MANY_PIXELS = "too_many_pixels"
    #: The object is larger than MAX_FILE_BYTES.
    TOO_LARGE = "too_large"
    #: The enhanced image would be larger than the output format can hold.
    OUTPUT_TOO_LARGE = "output_too_large"
    #: The object's key is not one the pipeline accepts (see photoenhance/contracts/keys.py).
    INVALID_KEY = "invalid_key"
    #: The image's options (object metadata or batch options) are unusable.
    BAD_OPTIONS = "bad_options"
    #: Every result key for this name is taken by another input of the batch.
    OUTPUT_KEY_CONFLICT = "output_key_conflict"
    #: The image's working set exceeds the worker's whole memory budget (WORKER_MEMORY_BUDGET_MB).
    OVER_MEMORY_BUDGET = "over_memory_budget"
    # -- the object is gone: only a new upload (a new image version) helps -------------------------
    #: The uploaded object was deleted before it was read.
    SOURCE_MISSING = "source_missing"
    #: The uploaded object was overwritten before it was read; the new version is its own image.
    SOURCE_REPLACED = "source_replaced"
    #: A file declared to the ingest API never arrived before its upload links expired.
    UPLOAD_MISSING = "upload_missing"
    #: Its batch was cancelled before a worker claimed it (or it was uploaded after the cancel).
    CANCELLED = "cancelled"
    # -- the worker, not the image: another attempt can succeed -----------------------------------
    #: The networks failed on this image (for example out of memory even at the smallest tile).
    PROCESSING_FAILED = "processing_failed"
    #: The engine that got the image had not loaded its quality level. Since each level has its own
    #: queue this is no ending: the worker queues the image at its level again (kept for old rows).
    QUALITY_NOT_LOADED = "quality_not_loaded"
    #: No live worker served the image's quality level within LEVEL_WAIT_MAX_S.
    QUALITY_NOT_SERVED = "quality_not_served"
    #: Transient failures used up RETRY_MAX_ATTEMPTS.
    RETRIES_EXHAUSTED = "retries_exhausted"
    #: Processing was cut off on every delivery (the worker crashed or was stopped each time).
    DELIVERY_LIMIT = "delivery_limit"
    #: An image error of no more specific kind.
    IMAGE_ERROR = "image_error"
    # -- transient: a service's condition, retried after a back-off, never final ------------------
    #: The object store could not be reached.
    STORAGE_UNAVAILABLE = "storage_unavailable"
    #: The database could not be reached.
    DATABASE_UNAVAILABLE = "database_unavailable"
    #: The broker could not be reached.
    BROKER_UNAVAILABLE = "broker_unavailable"
    #: The engine process (ENGINE_SOCKET) could not be reached.
    ENGINE_UNAVAILABLE = "engine_unavailable"
    #: A file system or database is full.
    DISK_FULL = "disk_full"
    #: Reading or writing a local file failed.
    IO_ERROR = "io_error"
    #: Anything unforeseen (counted as an attempt).
    INTERNAL_ERROR = "internal_error"

    @property
    def retry_can_help(self) -> bool:
        """Whether processing the same image version again can end otherwise.

        No for what the bytes, the key or the options decide (the same input fails the same way) and
        for an object that is gone (only a new upload, which is a new version, helps); yes for what
        depends on the worker or a service (memory, loaded levels, crashes, outages).
        """
        return self not in _RETRY_CANNOT_HELP


_RETRY_CANNOT_HELP = frozenset({
    FailureCode.NOT_AN_IMAGE,
    FailureCode.UNSUPPORTED_FORMAT,
    FailureCode.CORRUPT_IMAGE,
    FailureCode.TOO_MANY_PIXELS,
    FailureCode.TOO_LARGE,
    FailureCode.OUTPUT_TOO_LARGE,
    FailureCode.INVALID_KEY,
    FailureCode.BAD_OPTIONS,
    FailureCode.OUTPUT_KEY_CONFLICT,
    FailureCode.OVER_MEMORY_BUDGET,
    FailureCode.SOURCE_MISSING,
    FailureCode.SOURCE_REPLACED,
    FailureCode.UPLOAD_MISSING,
    FailureCode.CANCELLED,
})


_GONE = frozenset({FailureCode.SOURCE_MISSING, FailureCode.SOURCE_REPLACED, FailureCode.UPLOAD_MISSING})


def why_retry_cannot_help(code: str) -> str:
    """Plain words for why a retry leaves an image that failed with ``code`` alone."""
    if code in _GONE:
        return "the uploaded object is gone or was replaced: only a new upload can help"
    return "the same input fails the same way: fix or replace the file and upload it again"


def retry_can_help(code: str | None) -> bool:
    """Whether a retry can help an image that failed with ``code`` (a code this contract does not
    know, written by an older or newer version, is retried: the retry decides)."""
    try:
        return FailureCode(code).retry_can_help
    except ValueError:
        return True


class CodedError(Exception):
    """An error with a stable ``code`` (a :class:`FailureCode`) and a ``reason`` for people."""

    #: The code of the class; an instance may carry another (``CodedError(reason, code=...)``).
    code: str = FailureCode.IMAGE_ERROR

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"

    def to_dict(self) -> dict[str, str]:
        """The JSON form workers record: ``{"code": ..., "reason": ...}``."""
        return {"code": str(self.code), "reason": self.reason}


class ImageError(CodedError):
    """One image cannot be enhanced; ``code`` is stable, ``reason`` is for people."""

    code = FailureCode.IMAGE_ERROR


class NotAnImage(ImageError):
    """The bytes are no image at all: empty, text, or a format nobody would call a picture."""

    code = FailureCode.NOT_AN_IMAGE


class UnsupportedImage(ImageError):
    """A real image in a format, mode or layout the engine does not handle (GIF, TIFF, HEIC ...)."""

    code = FailureCode.UNSUPPORTED_FORMAT


class CorruptImage(ImageError):
    """The header names a supported format but the data is damaged or truncated."""

    code = FailureCode.CORRUPT_IMAGE


class TooManyPixels(ImageError):
    """The header announces more pixels than the configured maximum; nothing was decoded."""

    code = FailureCode.TOO_MANY_PIXELS


class OutputTooLarge(ImageError):
    """The enhanced image would be larger than the chosen output format can hold."""

    code = FailureCode.OUTPUT_TOO_LARGE


class ProcessingFailed(ImageError):
    """The networks failed on this image (for example out of memory even at the smallest tile)."""

    code = FailureCode.PROCESSING_FAILED


class QualityNotLoaded(ImageError):
    """The request asks for a quality level this engine was not loaded for."""

    code = FailureCode.QUALITY_NOT_LOADED


def image_error_from_dict(data: dict[str, str]) -> ImageError:
    """The :class:`ImageError` that :meth:`CodedError.to_dict` wrote, as its own class where the
    code has one (so ``QualityNotLoaded`` stays recognisable across a process boundary)."""
    code, reason = str(data.get("code")), str(data.get("reason"))
    for cls in (NotAnImage, UnsupportedImage, CorruptImage, TooManyPixels, OutputTooLarge, ProcessingFailed,
                QualityNotLoaded):
        if cls.code == code:
            return cls(reason)
    return ImageError(reason, code=code)
