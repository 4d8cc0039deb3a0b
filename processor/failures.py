"""The failure policy: which errors end an image for good, which are tried again, and when.

Permanent errors say something about the image itself (not an image, too many pixels, corrupt data,
a refused key, unusable options): retrying the same bytes cannot succeed, so the image is recorded
as failed with a reason and the message is acknowledged at once. Transient errors say something
about a service (object store, database, broker) and are retried after a back-off, by re-announcing
the object through a delay queue (see :mod:`processor.queues`) so the consumer never waits.
Anything unexpected counts as transient too, but only :attr:`RetryPolicy.max_attempts` times:
a bug that fails every attempt ends as ``retries_exhausted`` instead of looping.

An *outage* (store, database, broker or engine process unreachable, a full disk, a failing connection) is a
transient failure that says nothing about the image: it is waited out with the same back-off,
however long it lasts, and spends none of the image's attempts. Otherwise an outage longer than
the budget would fail every image that arrived during it, and could not even record that.

A full disk (SQLite's ``SQLITE_FULL`` "database or disk is full", PostgreSQL's ``disk_full``,
``ENOSPC`` / ``EDQUOT`` from the file system) is transient with its own code, ``disk_full``: it
says nothing about the image, it ends when someone frees space, and it must not be mistaken for an
unreachable database in the logs and ``photoenhance_retries_total{reason}``.
"""

from __future__ import annotations

import asyncio
import errno
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

import aio_pika.exceptions
import aiormq.exceptions
import urllib3.exceptions
from minio.error import MinioException, S3Error, ServerError
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from photoenhance.contracts.failures import CodedError, FailureCode
from photoenhance.contracts.options import OptionsError
from photoenhance.settings import Settings
from processor.engine.errors import ImageError
from processor.engine_service.wire import EngineUnavailable

__all__ = ["OUTAGE_CODES", "Failure", "PermanentFailure", "RetryPolicy", "Verdict", "classify"]

#: Transient codes that are a service's condition, not the image's: never counted as attempts.
OUTAGE_CODES = frozenset({
    FailureCode.STORAGE_UNAVAILABLE,
    FailureCode.DATABASE_UNAVAILABLE,
    FailureCode.BROKER_UNAVAILABLE,
    FailureCode.ENGINE_UNAVAILABLE,
    FailureCode.DISK_FULL,
    FailureCode.IO_ERROR,
})

#: ``errno`` values of a full file system (no space left; quota exceeded).
_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
#: PostgreSQL's SQLSTATE for "disk_full" (class 53, insufficient resources).
_PG_DISK_FULL = "53100"

#: S3 error codes that mean "this version of the object is not there any more": permanent.
_GONE_CODES = {"NoSuchKey": FailureCode.SOURCE_MISSING, "PreconditionFailed": FailureCode.SOURCE_REPLACED}


class Verdict(str, Enum):
    """What a failure means for the image."""

    #: Record the image as failed with the reason; acknowledge.
    PERMANENT = "permanent"
    #: Try again after a back-off; the image goes back to pending meanwhile.
    TRANSIENT = "transient"


class PermanentFailure(CodedError):
    """A failure of one image that no retry can fix; ``code`` is stable, ``reason`` is for people."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason, code=code)


@dataclass(frozen=True)
class Failure:
    """A classified failure."""

    verdict: Verdict
    #: Stable machine-readable code (stored with failed images, used as a metric label).
    code: str
    reason: str

    @property
    def permanent(self) -> bool:
        return self.verdict is Verdict.PERMANENT

    @property
    def outage(self) -> bool:
        """A transient failure of a service the image depends on (see the module docstring)."""
        return self.verdict is Verdict.TRANSIENT and self.code in OUTAGE_CODES


def classify(exc: BaseException) -> Failure:
    """Decide whether ``exc`` ends the image (permanent) or deserves another attempt (transient)."""
    if isinstance(exc, PermanentFailure):
        return Failure(Verdict.PERMANENT, exc.code, exc.reason)
    if isinstance(exc, ImageError):
        return Failure(Verdict.PERMANENT, exc.code, exc.reason)
    if isinstance(exc, OptionsError):
        return Failure(Verdict.PERMANENT, FailureCode.BAD_OPTIONS, f"the image's options are unusable: {exc}")
    if isinstance(exc, S3Error) and exc.code in _GONE_CODES:
        what = "was deleted" if exc.code == "NoSuchKey" else "was overwritten by a newer upload"
        return Failure(Verdict.PERMANENT, _GONE_CODES[exc.code], f"the uploaded object {what} before it was read")
    transient = _transient_code(exc)
    return Failure(Verdict.TRANSIENT, transient, f"{type(exc).__name__}: {exc}"[:500])


def _transient_code(exc: BaseException) -> str:
    if _disk_full(exc):
        return FailureCode.DISK_FULL
    if isinstance(exc, (MinioException, ServerError, urllib3.exceptions.HTTPError)):
        return FailureCode.STORAGE_UNAVAILABLE
    if isinstance(exc, (DBAPIError, SQLAlchemyError)):
        return FailureCode.DATABASE_UNAVAILABLE
    if isinstance(exc, (aio_pika.exceptions.AMQPError, aiormq.exceptions.AMQPError)):
        return FailureCode.BROKER_UNAVAILABLE
    if isinstance(exc, EngineUnavailable):
        return FailureCode.ENGINE_UNAVAILABLE
    if isinstance(exc, (OSError, asyncio.TimeoutError)):
        return FailureCode.IO_ERROR
    return FailureCode.INTERNAL_ERROR


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it wraps, says that a disk is full."""
    for error in _chain(exc):
        if isinstance(error, sqlite3.Error) and getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        if getattr(error, "sqlstate", None) == _PG_DISK_FULL:  # asyncpg's error and SQLAlchemy's wrapper
            return True
        if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
            return True
    return False


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: SQLAlchemy's ``orig``, then causes and contexts (each once)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        error = todo.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        todo.extend(
            e for e in (getattr(error, "orig", None), error.__cause__, error.__context__) if isinstance(e, BaseException)
        )


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off for transient failures and for images another worker holds.

    ``base_delay_ms`` (default 1000) is the first delay, each further attempt doubles it up to
    ``max_delay_ms`` (default 60000); after ``max_attempts`` (default 8) transient failures an image
    is marked failed. Each distinct delay is one delay queue.
    """

    base_delay_ms: int = 1000
    max_delay_ms: int = 60_000
    max_attempts: int = 8

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.retry_base_delay_ms, settings.retry_max_delay_ms, settings.retry_max_attempts)

    def delay_ms(self, attempt: int) -> int:
        """The back-off before attempt number ``attempt`` + 1 (``attempt`` counts from 1)."""
        step = max(attempt, 1) - 1
        return min(self.max_delay_ms, self.base_delay_ms * 2 ** min(step, 30))

    def delays(self) -> list[int]:
        """Every delay the policy can ask for, shortest first (one delay queue each)."""
        return sorted({self.delay_ms(n) for n in range(1, max(self.max_attempts, 1) + 32)})

    def exhausted(self, attempt: int) -> bool:
        """Whether ``attempt`` transient failures are as many as an image is allowed."""
        return attempt >= self.max_attempts
