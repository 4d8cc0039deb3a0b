"""Presigned requests: browser uploads (POST policy or PUT), result downloads, and ingest's own reads.

Everything here is local computation (HMAC signatures); no request reaches the store.

Upload URLs are signed for ``S3_PUBLIC_ENDPOINT`` when it is set, because that is the address a
browser reaches the store at (the services may use an internal name); a signature covers the host,
so signing for one name and sending to another fails.

Result links are signed with a signing time rounded down to a window of a tenth of
``PRESIGN_EXPIRY_S`` and kept for that window: every status read of a large batch would otherwise
sign each of its links again (1,000 links were ~0.15 s of CPU per read, and 16 pollers held
ingest's event loop for tens of milliseconds). A link handed out therefore has at least 90 % of
its lifetime left, and an image keeps the same URL across polls, so a browser fetches it once.

A POST policy binds, and the store enforces (tests/security/test_presigned_uploads.py shows which
on the live store): the bucket, the exact key, the exact content type, the size range 1..declared
size, and the expiry. A presigned PUT binds only the method, bucket, key and expiry: the store
takes any size, type, ACL or ``x-amz-copy-source`` with it, so the API hands out POST policies,
and PUTs only where INGEST_ALLOW_PUT_UPLOADS says the presigning key can do no harm.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from minio import Minio
from minio.datatypes import PostPolicy

from ingest.names import content_disposition
from photoenhance.s3 import minio_client
from photoenhance.settings import Settings

__all__ = ["Presigner", "Upload"]

#: Lifetime of the URLs ingest signs for its own reads (the archive streams one object per URL).
INTERNAL_URL_LIFETIME = timedelta(minutes=10)

#: Result links signed in one window are reused for the rest of it: this fraction of their lifetime.
LINK_WINDOW_FRACTION = 10
#: Most result links kept at once; past it the cache starts over (a bound, not a working size).
LINK_CACHE_MAX = 200_000


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Upload:
    """How a client uploads one file: an HTML-form POST with ``fields``, or a PUT with ``headers``."""

    method: str
    url: str
    key: str
    fields: dict[str, str] | None = None
    headers: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form, leaving out what does not apply to the method."""
        out: dict[str, Any] = {"method": self.method, "url": self.url, "key": self.key}
        if self.fields is not None:
            out["fields"] = self.fields
        if self.headers is not None:
            out["headers"] = self.headers
        return out


class Presigner:
    """Signs upload, download and internal read requests for one set of settings."""

    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self._settings = settings
        self._clock = clock
        self._public = _client(settings, settings.presign_endpoint)
        self._internal = _client(settings, settings.s3_endpoint)
        self._post_url = f"{settings.presign_endpoint.rstrip('/')}/{settings.s3_input_bucket}"
        self._links = _LinkCache()

    @property
    def expiry(self) -> timedelta:
        """Lifetime of upload and result URLs."""
        return timedelta(seconds=self._settings.presign_expiry_s)

    def expires_at(self) -> datetime:
        """When URLs signed now stop working."""
        return self._clock() + self.expiry

    def upload_post(self, key: str, *, size: int, content_type: str) -> Upload:
        """An HTML-form POST upload of exactly ``key``, 1..``size`` bytes, of ``content_type``.

        The client sends ``fields`` as form fields, in any order, followed by the file as the
        last field, named ``file``.
        """
        policy = PostPolicy(self._settings.s3_input_bucket, self.expires_at())
        policy.add_equals_condition("key", key)
        policy.add_equals_condition("Content-Type", content_type)
        policy.add_content_length_range_condition(1, size)
        fields = self._public.presigned_post_policy(policy)
        return Upload(
            method="POST",
            url=self._post_url,
            key=key,
            fields={"key": key, "Content-Type": content_type, **fields},
        )

    def upload_put(self, key: str, *, content_type: str) -> Upload:
        """A presigned PUT of ``key``; the store binds none of its headers (see module docstring).

        The API hands one out only where INGEST_ALLOW_PUT_UPLOADS is on.
        """
        url = self._public.get_presigned_url(
            "PUT", self._settings.s3_input_bucket, key, expires=self.expiry, request_date=self._now_naive()
        )
        return Upload(method="PUT", url=url, key=key, headers={"Content-Type": content_type})

    def link_window(self) -> int:
        """Start (seconds since the epoch) of the window result links are signed in now."""
        window = max(1, self._settings.presign_expiry_s // LINK_WINDOW_FRACTION)
        return int(self._clock().timestamp()) // window * window

    def download_url(self, bucket: str, key: str, filename: str) -> str:
        """A browser link to an object that downloads under ``filename``.

        Signed as of the start of the current window and reused within it (module docstring).
        """
        window_start = self.link_window()
        cache_key = (bucket, key, filename)
        cached = self._links.get(window_start, cache_key)
        if cached is not None:
            return cached
        url = self._public.get_presigned_url(
            "GET",
            bucket,
            key,
            expires=self.expiry,
            request_date=datetime.fromtimestamp(window_start, UTC).replace(tzinfo=None),
            response_headers={"response-content-disposition": content_disposition(filename)},
        )
        self._links.put(window_start, cache_key, url)
        return url

    def internal_get_url(self, bucket: str, key: str) -> str:
        """A URL ingest itself reads an object from (the services' endpoint, short-lived)."""
        return self._internal.get_presigned_url(
            "GET", bucket, key, expires=INTERNAL_URL_LIFETIME, request_date=self._now_naive()
        )

    def _now_naive(self) -> datetime:
        # minio formats the signing date without converting it, so hand it naive UTC.
        return self._clock().astimezone(UTC).replace(tzinfo=None)


class _LinkCache:
    """Result links of the current signing window; a new window starts the cache over.

    Status pages are signed on worker threads, hence the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._window = -1
        self._urls: dict[tuple[str, str, str], str] = {}

    def get(self, window: int, key: tuple[str, str, str]) -> str | None:
        with self._lock:
            return self._urls.get(key) if window == self._window else None

    def put(self, window: int, key: tuple[str, str, str], url: str) -> None:
        with self._lock:
            if window != self._window or len(self._urls) >= LINK_CACHE_MAX:
                self._window = window
                self._urls = {}
            self._urls[key] = url


def _client(settings: Settings, endpoint: str) -> Minio:
    """A signing client for ``endpoint``; the region is given, so minio never asks the store for it."""
    return minio_client(settings.replace(s3_endpoint=endpoint))
