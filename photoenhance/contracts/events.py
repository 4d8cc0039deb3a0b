"""Bucket notifications: the one place a message body becomes typed records.

Absorbs the variants seen in the wild (see ``tests/fixtures/events``): MinIO's wrapper object with
``EventName``/``Key``/``Records``, a bare ``Records`` list (AWS, Ceph RGW), ``eventName`` with or
without the ``s3:`` prefix, quoted or bare eTags, Ceph's ``metadata`` list and MinIO's
``userMetadata`` map.

Keys: AWS and MinIO send them URL-encoded with ``+`` for spaces (MinIO also encodes ``/``), and
they are decoded with ``unquote_plus``. Ceph RGW (``eventSource`` ``ceph:s3``) sends the key as
it is, unencoded: measured on RGW 16.2.15, ``b/with space.jpg``, ``b/plus+sign.jpg``,
``b/pct%20lit.jpg`` and ``b/ünï 日本.jpg`` arrive verbatim (UTF-8 in the JSON), so decoding them
would turn ``+`` into a space and ``%20`` into a space. Those keys are taken as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

from photoenhance.contracts.keys import InputKey, KeyRejected, decode_event_key, parse_input_key

__all__ = [
    "CREATION_EVENTS",
    "IgnoredEvent",
    "InvalidKey",
    "NotificationError",
    "ObjectCreated",
    "notification_body",
    "parse_notification",
]

#: Event sources whose keys are not URL-encoded (see the module docstring).
RAW_KEY_SOURCES = frozenset({"ceph:s3"})

#: Event names that announce new object content. MinIO also sends ``s3:ObjectCreated:PutTagging``,
#: ``PutRetention`` and ``PutLegalHold``, which change no bytes and are not in this set.
CREATION_EVENTS = frozenset(
    {
        "s3:ObjectCreated:Put",
        "s3:ObjectCreated:Post",
        "s3:ObjectCreated:Copy",
        "s3:ObjectCreated:CompleteMultipartUpload",
    }
)


class NotificationError(ValueError):
    """A message body that is not a usable bucket notification; the message says why."""


class IgnoredEvent(NotificationError):
    """A well-formed notification of something other than new object content (a delete, a tag)."""


class InvalidKey(NotificationError, KeyRejected):
    """A well-formed notification naming a key the pipeline refuses (empty, escaping, not UTF-8).

    The failure of the object it names: ``code`` (``invalid_key``) and ``reason`` are what is
    recorded against its batch, with what the notification says of the object besides.
    """

    #: Unknown: the record's key is refused before its time is read.
    event_time: datetime | None = None

    def __init__(self, bucket: str, rejected: KeyRejected, etag: str, size: int) -> None:
        super().__init__(rejected.key, f"the key is refused: {rejected.reason}", rejected.batch_id)
        self.bucket = bucket
        self.etag = etag
        self.size = size

    @property
    def name(self) -> str:
        """The key inside its batch prefix (the whole key when nothing follows a batch prefix)."""
        inside = self.key[len(self.batch_id) + 1:] if self.batch_id else ""
        return inside or self.key

    def __str__(self) -> str:
        return f"bucket {self.bucket!r}, key {self.key!r}: {self.reason}"


@dataclass(frozen=True)
class ObjectCreated:
    """One new object, as announced by the object store."""

    bucket: str
    #: The decoded key, ``<batch_id>/<name>``.
    key: str
    batch_id: str
    #: The key inside the batch prefix.
    name: str
    size: int
    #: The eTag without quotes; with the bucket and key it identifies one version of the content.
    etag: str
    #: Always with the ``s3:`` prefix, e.g. ``s3:ObjectCreated:Put``.
    event_name: str
    #: When the store accepted the object (timezone-aware, UTC).
    event_time: datetime
    content_type: str | None = None
    #: User metadata with the ``x-amz-meta-`` prefix removed and names lower-cased.
    user_metadata: dict[str, str] = field(default_factory=dict)
    #: The record's ``eventSource``: ``ceph:s3``, ``minio:s3``, ``aws:s3``, or ``photoenhance:...``
    #: for notifications the pipeline synthesised (they carry no user metadata).
    event_source: str | None = None

    @property
    def from_store(self) -> bool:
        """Whether the object store itself announced the object (so its metadata came along)."""
        return self.event_source is not None and not self.event_source.startswith("photoenhance:")

    @property
    def is_manifest(self) -> bool:
        """Whether the object is a batch manifest rather than an image."""
        return InputKey(self.batch_id, self.name).is_manifest


def parse_notification(body: bytes | str) -> list[ObjectCreated]:
    """Turn a bucket-notification message body into records, or raise :class:`NotificationError`.

    Every record must be valid for any to be returned, so nothing is half-registered. The
    subclasses :class:`IgnoredEvent` and :class:`InvalidKey` tell callers which refusals are
    harmless and which should be recorded against a batch.
    """
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotificationError(f"body is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise NotificationError(f"body is a JSON {type(doc).__name__}, not an object")
    records = doc.get("Records")
    if records is None:
        raise NotificationError("body has no 'Records' list")
    if not isinstance(records, list):
        raise NotificationError(f"'Records' is a {type(records).__name__}, not a list")
    if not records:
        raise NotificationError("'Records' is empty")
    return [_parse_record(i, rec) for i, rec in enumerate(records)]


def _parse_record(index: int, rec: Any) -> ObjectCreated:
    where = f"Records[{index}]"
    if not isinstance(rec, dict):
        raise NotificationError(f"{where} is not an object")
    event_name = _require_str(rec, "eventName", where)
    if not event_name.startswith("s3:"):
        event_name = "s3:" + event_name
    s3 = _require_dict(rec, "s3", where)
    bucket = _require_str(_require_dict(s3, "bucket", f"{where}.s3"), "name", f"{where}.s3.bucket")
    obj = _require_dict(s3, "object", f"{where}.s3")
    raw_key = _require_str(obj, "key", f"{where}.s3.object", allow_empty=True)
    size = obj.get("size", 0)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise NotificationError(f"{where}.s3.object.size is {size!r}, not a non-negative integer")
    etag = obj.get("eTag", obj.get("etag"))
    if not isinstance(etag, str) or not etag.strip('"'):
        raise NotificationError(f"{where}.s3.object.eTag is missing or not a string")
    etag = etag.strip('"')
    if event_name not in CREATION_EVENTS:
        raise IgnoredEvent(f"{where}: event {event_name!r} announces no new object content")
    try:
        source = rec.get("eventSource")
        key = raw_key if isinstance(source, str) and source in RAW_KEY_SOURCES else decode_event_key(raw_key)
        parsed = parse_input_key(key)
    except KeyRejected as exc:
        raise InvalidKey(bucket, exc, etag, size) from exc
    return ObjectCreated(
        bucket=bucket,
        key=parsed.key,
        batch_id=parsed.batch_id,
        name=parsed.name,
        size=size,
        etag=etag,
        event_name=event_name,
        event_time=_parse_time(rec.get("eventTime"), where),
        content_type=_content_type(obj),
        user_metadata=_user_metadata(obj, where),
        event_source=source if isinstance(source, str) else None,
    )


def _require_dict(doc: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    value = doc.get(name)
    if not isinstance(value, dict):
        raise NotificationError(f"{where}.{name} is missing or not an object")
    return value


def _require_str(doc: dict[str, Any], name: str, where: str, allow_empty: bool = False) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or (not value and not allow_empty):
        raise NotificationError(f"{where}.{name} is missing or not a string")
    return value


def _parse_time(value: Any, where: str) -> datetime:
    if not isinstance(value, str) or not value:
        raise NotificationError(f"{where}.eventTime is missing or not a string")
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Ceph writes microseconds, MinIO milliseconds; some stores write nanoseconds.
    head, dot, frac = text.partition(".")
    if dot:
        digits = "".join(ch for ch in frac if ch.isdigit())
        text = f"{head}.{digits[:6]:0<6}{frac[len(digits):]}"
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise NotificationError(f"{where}.eventTime {value!r} is not an ISO-8601 time") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def _content_type(obj: dict[str, Any]) -> str | None:
    value = obj.get("contentType")
    return value if isinstance(value, str) and value else None


def _user_metadata(obj: dict[str, Any], where: str) -> dict[str, str]:
    """Merge MinIO's ``userMetadata`` map and Ceph's ``metadata`` list into one plain dict."""
    pairs: list[tuple[Any, Any]] = []
    minio_meta = obj.get("userMetadata")
    if isinstance(minio_meta, dict):
        pairs.extend(minio_meta.items())
    ceph_meta = obj.get("metadata")
    if isinstance(ceph_meta, list):
        for item in ceph_meta:
            if not isinstance(item, dict):
                raise NotificationError(f"{where}.s3.object.metadata holds a non-object entry")
            pairs.append((item.get("key"), item.get("val")))
    meta: dict[str, str] = {}
    for name, value in pairs:
        if not isinstance(name, str) or not isinstance(value, str):
            continue
        lowered = name.lower()
        if lowered.startswith("x-amz-meta-"):
            meta[lowered[len("x-amz-meta-"):]] = value
    return meta


def notification_body(
    bucket: str,
    key: str,
    etag: str,
    size: int,
    event_time: datetime,
    event_name: str = "s3:ObjectCreated:Put",
    source: str = "photoenhance:reconciler",
) -> bytes:
    """A bucket notification for an existing object, in the AWS shape :func:`parse_notification` reads.

    The reconciler and the retry endpoint send these to the work queue, so announced and
    re-announced objects take the one processing path.
    """
    record = {
        "eventVersion": "2.1",
        "eventSource": source,
        "eventTime": event_time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "eventName": event_name,
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": bucket},
            "object": {"key": quote_plus(key, safe=""), "size": size, "eTag": etag},
        },
    }
    return json.dumps({"Records": [record]}, separators=(",", ":")).encode()
