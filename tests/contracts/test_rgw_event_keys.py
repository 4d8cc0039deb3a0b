"""Keys in Ceph RGW's notifications arrive unencoded and must round-trip exactly.

The payloads were captured from a live RGW 16.2.15 (tests/fixtures/events/README.md); the keys
below are the ones that were uploaded.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from photoenhance.contracts.events import notification_body, parse_notification

FIXTURES = Path(__file__).parents[1] / "fixtures" / "events"

UPLOADED = {
    "ceph-rgw-16.2-key-space.json": "rgw-keys/with space.jpg",
    "ceph-rgw-16.2-key-plus.json": "rgw-keys/plus+sign.jpg",
    "ceph-rgw-16.2-key-percent.json": "rgw-keys/100% real %20 not-a-space.jpg",
    "ceph-rgw-16.2-key-unicode.json": "rgw-keys/ünïcødé 日本 😀.jpg",
    "ceph-rgw-16.2-key-nested.json": "rgw-keys/nested/dir/photo.jpg",
    "ceph-rgw-16.2-key-mixed.json": "rgw-keys/a+b %2B c&d=e?f#g.jpg",
}


@pytest.mark.parametrize(("fixture", "uploaded"), sorted(UPLOADED.items()))
def test_rgw_key_round_trips_exactly(fixture: str, uploaded: str) -> None:
    body = (FIXTURES / fixture).read_bytes()
    assert json.loads(body)["Records"][0]["s3"]["object"]["key"] == uploaded  # sent raw
    [rec] = parse_notification(body)
    assert rec.key == uploaded
    assert f"{rec.batch_id}/{rec.name}" == uploaded


def test_same_encoded_key_is_decoded_for_other_sources() -> None:
    """MinIO and AWS encode keys: the same bytes from them mean something else."""
    doc = json.loads((FIXTURES / "ceph-rgw-16.2-key-plus.json").read_bytes())
    doc["Records"][0]["eventSource"] = "minio:s3"
    [rec] = parse_notification(json.dumps(doc))
    assert rec.key == "rgw-keys/plus sign.jpg"


def test_record_without_event_source_is_decoded() -> None:
    doc = json.loads((FIXTURES / "ceph-rgw-16.2-key-mixed.json").read_bytes())
    del doc["Records"][0]["eventSource"]
    [rec] = parse_notification(json.dumps(doc))
    assert rec.key == "rgw-keys/a b + c&d=e?f#g.jpg"


@pytest.mark.parametrize("key", sorted(UPLOADED.values()))
def test_reconciler_bodies_still_round_trip(key: str) -> None:
    """Our own re-announcements encode keys the AWS way and must decode to the same key."""
    when = datetime(2026, 11, 28, tzinfo=UTC)
    [rec] = parse_notification(notification_body("in", key, "abc", 7, when))
    assert rec.key == key
