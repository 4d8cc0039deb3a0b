"""The plain records: an image version is made from a bucket notification in one place."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from db.records import ImageVersion
from photoenhance.contracts.events import InvalidKey, notification_body, parse_notification

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_a_version_is_what_its_notification_announces_at_the_level_given() -> None:
    [record] = parse_notification(notification_body("in", "b1/sub/a b.jpg", "e1", 10, T0))
    assert ImageVersion.of(record) == ImageVersion(
        bucket="in", batch_id="b1", key="b1/sub/a b.jpg", name="sub/a b.jpg", etag="e1", size=10, uploaded_at=T0
    )
    assert ImageVersion.of(record, "best").level == "best"


@pytest.mark.parametrize(("key", "name"), [("b1/../x.jpg", "../x.jpg"), ("b1/", "b1/")])
def test_a_refused_key_is_recorded_as_the_version_it_names(key: str, name: str) -> None:
    with pytest.raises(InvalidKey) as info:
        parse_notification(notification_body("in", key, "e1", 10, T0))
    assert ImageVersion.of(info.value) == ImageVersion(
        bucket="in", batch_id="b1", key=key, name=name, etag="e1", size=10, uploaded_at=None
    )
