"""Errors the engine raises, each with a stable machine-readable ``code`` and a plain-words ``reason``.

:class:`ImageError` and its subclasses are *permanent* failures of one image: retrying the same bytes
cannot succeed, so the worker records the reason and moves on. :class:`WeightsError` is a start-up
failure of the whole engine (a missing or altered weight file).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from photoenhance.contracts.options import Quality

if TYPE_CHECKING:
    from processor.engine.records import EnhanceResult

__all__ = [
    "CorruptImage",
    "EngineClosed",
    "ImageError",
    "NotAnImage",
    "OutputTooLarge",
    "ProcessingFailed",
    "QualityNotLoaded",
    "TooManyPixels",
    "UnsupportedImage",
    "WeightsError",
    "as_image_error",
    "guard",
    "not_loaded",
]

log = logging.getLogger(__name__)



class ImageError(Exception):
    """One image cannot be enhanced; ``code`` is stable, ``reason`` is for people."""

    #: Stable identifier stored in the database and sent in progress events.
    code: str = "image_error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"

    def to_dict(self) -> dict[str, str]:
        """The JSON form workers record: ``{"code": ..., "reason": ...}``."""
        return {"code": self.code, "reason": self.reason}


class NotAnImage(ImageError):
    """The bytes are no image at all: empty, text, or a format nobody would call a picture."""

    code = "not_an_image"


class UnsupportedImage(ImageError):
    """A real image in a format, mode or layout the engine does not handle (GIF, TIFF, HEIC ...)."""

    code = "unsupported_format"


class CorruptImage(ImageError):
    """The header names a supported format but the data is damaged or truncated."""

    code = "corrupt_image"


class TooManyPixels(ImageError):
    """The header announces more pixels than the configured maximum; nothing was decoded."""

    code = "too_many_pixels"


class OutputTooLarge(ImageError):
    """The enhanced image would be larger than the chosen output format can hold."""

    code = "output_too_large"


class ProcessingFailed(ImageError):
    """The networks failed on this image (for example out of memory even at the smallest tile)."""

    code = "processing_failed"


class QualityNotLoaded(ImageError):
    """The request asks for a quality level this engine was not loaded for."""

    code = "quality_not_loaded"


def not_loaded(quality: Quality, loaded: frozenset[Quality]) -> QualityNotLoaded:
    """The error for a request at ``quality`` on an engine that loaded ``loaded``."""
    names = ", ".join(sorted(q.value for q in loaded)) or "none"
    return QualityNotLoaded(f"quality {quality.value!r} is not available on this worker (loaded: {names})")


def as_image_error(exc: Exception, step: str) -> ImageError:
    """``exc`` as one image's error (unforeseen ones logged with their traceback)."""
    if isinstance(exc, ImageError):
        return exc
    log.error("%s failed: %s", step, exc, exc_info=exc)
    return ProcessingFailed(f"{step} failed: {type(exc).__name__}: {exc}")


def guard(step: Callable[[], EnhanceResult]) -> EnhanceResult | ImageError:
    """Run one image's work; its failure becomes its result instead of the batch's."""
    try:
        return step()
    except Exception as exc:  # noqa: BLE001 - an unforeseen failure of one image must not cost the others
        return as_image_error(exc, "enhancement")


class WeightsError(Exception):
    """A weight file is missing, unreadable or not the official one; the message says which and how to fix it."""


class EngineClosed(RuntimeError):
    """The engine was used after :meth:`Engine.close`."""
