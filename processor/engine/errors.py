"""Errors the engine raises, each with a stable machine-readable ``code`` and a plain-words ``reason``.

:class:`ImageError` and its subclasses are *permanent* failures of one image: retrying the same bytes
cannot succeed, so the worker records the reason and moves on. They are a public contract and live in
:mod:`photoenhance.contracts.failures`; this module names them for the engine and adds the per-image
helpers. :class:`WeightsError` is a start-up failure of the whole engine (a missing or altered weight
file).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from photoenhance.contracts.failures import (
    CorruptImage,
    ImageError,
    NotAnImage,
    OutputTooLarge,
    ProcessingFailed,
    QualityNotLoaded,
    TooManyPixels,
    UnsupportedImage,
)
from photoenhance.contracts.options import Quality

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

#: What one image's work returns (an ``EnhanceResult``); generic so this module needs no records.
T = TypeVar("T")


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


def guard(step: Callable[[], T]) -> T | ImageError:
    """Run one image's work; its failure becomes its result instead of the batch's."""
    try:
        return step()
    except Exception as exc:  # noqa: BLE001 - an unforeseen failure of one image must not cost the others
        return as_image_error(exc, "enhancement")


class WeightsError(Exception):
    """A weight file is missing, unreadable or not the official one; the message says which and how to fix it."""


class EngineClosed(RuntimeError):
    """The engine was used after :meth:`Engine.close`."""
