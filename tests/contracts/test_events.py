"""Bucket-notification parsing over every captured payload and many malformed ones."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from photoenhance.contracts.events import (
    IgnoredEvent,
    InvalidKey,
    NotificationError,
    notification_body,
    parse_notification,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "events"


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def body(doc: object) -> bytes:
    return json.dumps(doc).encode()


def minimal(key: str = "b1/a.jpg", event: str = "ObjectCreated:Put", **obj: object) -> dict:
    obj = {"key": key, "size": 3, "eTag": "abc", **obj}
    return {
        "Records": [
            {"eventName": event, "eventTime": "2026-11-28T10:00:00Z", "s3": {"bucket": {"name": "in"}, "object": obj}}
        ]
    }


def test_minio_put() -> None:
    [rec] = parse_notification(body(load("minio-put.json")))
    assert rec.bucket == "uploads"
    assert rec.key == "batch-42/IMG 0001 ü+x.jpg"
    assert (rec.batch_id, rec.name) == ("batch-42", "IMG 0001 ü+x.jpg")
    assert rec.size == 482113 and rec.etag == "2b1e0f1c6d6a4f0b9a8f3c7d5e4b1a09"
    assert rec.event_name == "s3:ObjectCreated:Put"
    assert rec.event_time == datetime(2026, 11, 28, 13, 37, 0, 123000, tzinfo=UTC)
    assert rec.content_type == "image/jpeg"
    assert rec.user_metadata == {"batch-id": "batch-42"}


def test_minio_complete_multipart() -> None:
    [rec] = parse_notification(body(load("minio-complete-multipart.json")))
    assert rec.event_name == "s3:ObjectCreated:CompleteMultipartUpload"
    assert rec.key == "batch-42/scan 0002.tiff"
    assert rec.etag == "69512551a247683ad42c13a4ffed1798-3"


def test_ceph_rgw_put() -> None:
    [rec] = parse_notification((FIXTURES / "ceph-rgw-16.2-put.json").read_bytes())
    assert (rec.bucket, rec.key, rec.size) == ("notif-1795874348", "first/hello.txt", 19)
    assert rec.event_time == datetime(2026, 11, 28, 13, 59, 8, 706034, tzinfo=UTC)
    assert rec.user_metadata == {"origin": "spike"}


def test_aws_style_put_without_s3_prefix() -> None:
    [rec] = parse_notification(body(load("aws-style-put.json")))
    assert rec.event_name == "s3:ObjectCreated:Put"
    assert rec.key == "batch-7/img 1 ü+x.jpg"


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_every_fixture_parses_to_one_record(name: str) -> None:
    records = parse_notification((FIXTURES / name).read_bytes())
    assert len(records) == 1 and records[0].etag and "/" in records[0].key


def test_quoted_etag_is_unquoted() -> None:
    [rec] = parse_notification(body(minimal(eTag='"0123abc"')))
    assert rec.etag == "0123abc"


def test_manifest_is_recognised() -> None:
    [rec] = parse_notification(body(minimal(key="b1/_batch.json")))
    assert rec.is_manifest


def test_synthesised_body_round_trips_an_awkward_key() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    key = "b1/sub dir/a+b %41 ü.jpg"
    [rec] = parse_notification(notification_body("in", key, "etag1", 42, when))
    assert (rec.key, rec.etag, rec.size, rec.event_time) == (key, "etag1", 42, when)


MALFORMED = {
    "not json": b"{nope",
    "not utf-8": b"\xff\xfe{",
    "json array": b"[]",
    "json string": b'"Records"',
    "no Records": body({"EventName": "s3:ObjectCreated:Put"}),
    "Records not a list": body({"Records": {"a": 1}}),
    "Records empty": body({"Records": []}),
    "record not an object": body({"Records": [42]}),
    "no eventName": body({"Records": [{"s3": {}}]}),
    "no s3": body({"Records": [{"eventName": "ObjectCreated:Put"}]}),
    "no bucket name": body({"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {}, "object": {}}}]}),
    "size is a string": body(minimal(size="3")),
    "size negative": body(minimal(size=-1)),
    "size boolean": body(minimal(size=True)),
    "etag missing": body(minimal(eTag=None)),
    "etag empty quotes": body(minimal(eTag='""')),
    "time missing": body({"Records": [{**minimal()["Records"][0], "eventTime": None}]}),
    "time garbage": body({"Records": [{**minimal()["Records"][0], "eventTime": "yesterday"}]}),
    "metadata entries not objects": body(minimal(metadata=["x-amz-meta-a"])),
    "one good record, one bad": body({"Records": minimal()["Records"] + [{"eventName": 1}]}),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_bodies_raise_the_named_error(case: str) -> None:
    with pytest.raises(NotificationError) as info:
        parse_notification(MALFORMED[case])
    assert str(info.value), "the error must say why"
    assert not isinstance(info.value, (IgnoredEvent, InvalidKey))


@pytest.mark.parametrize(
    "event", ["ObjectRemoved:Delete", "s3:ObjectCreated:PutTagging", "s3:ObjectCreated:PutRetention", "s3:TestEvent"]
)
def test_non_creation_events_are_refused_as_ignored(event: str) -> None:
    with pytest.raises(IgnoredEvent, match="no new object content"):
        parse_notification(body(minimal(event=event)))


@pytest.mark.parametrize(
    ("raw_key", "reason", "batch_id"),
    [
        ("", "empty", None),
        ("b1%2F", "names no file", "b1"),
        ("noprefix.jpg", "names no file", "noprefix.jpg"),
        ("b1%2F..%2F..%2Fetc%2Fpasswd", "escape", "b1"),
        ("b1%2F.%2Fa.jpg", "escape", "b1"),
        ("b1%2F%2Fa.jpg", "escape", "b1"),
        ("..%2Fa.jpg", "not a valid batch id", None),
        ("%2Fa.jpg", "not a valid batch id", None),
        ("b1%2F%FF%FE.jpg", "UTF-8", None),
        ("b1%2Fa%0Ab.jpg", "control characters", None),
        ("-bad%2Fa.jpg", "not a valid batch id", None),
        ("b" * 65 + "%2Fa.jpg", "not a valid batch id", None),
    ],
)
def test_refused_keys_raise_invalid_key(raw_key: str, reason: str, batch_id: str | None) -> None:
    with pytest.raises(InvalidKey) as info:
        parse_notification(body(minimal(key=raw_key)))
    assert info.value.reason.startswith("the key is refused: ") and reason in info.value.reason
    assert info.value.code == "invalid_key"
    assert info.value.bucket == "in" and info.value.etag == "abc"
    assert info.value.batch_id == batch_id
