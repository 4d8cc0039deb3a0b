"""Failures of one image: a stable machine-readable ``code`` and a plain-words ``reason``.

:class:`ImageError` and its subclasses are *permanent* failures of one image: retrying the same bytes
cannot succeed, so the worker records the reason and moves on. The codes are a public contract: they
are stored with failed images, sent in progress events and shown by the page and the CLI.
"""

from __future__ import annotations

__all__ = [
    "CorruptImage",
    "ImageError",
    "NotAnImage",
    "OutputTooLarge",
    "ProcessingFailed",
    "QualityNotLoaded",
    "TooManyPixels",
    "UnsupportedImage",
]


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
