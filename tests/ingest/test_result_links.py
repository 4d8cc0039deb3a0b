"""Result links: signed once per window and reused, each with most of its lifetime left.

A status read of a 1,000-image batch signed 1,000 links every time (issue 17); now a link signed
in the current window (a tenth of PRESIGN_EXPIRY_S) is handed out again until the window ends.
The store accepts such a link (tests/security/test_presigned_uploads.py downloads one).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from ingest.presign import Presigner
from photoenhance.settings import Settings

KEY = "01RESULTBATCH000000000000/photo.jpg"


class Clock:
    """A settable clock."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def signed_at_and_lifetime(url: str) -> tuple[datetime, int]:
    query = parse_qs(urlsplit(url).query)
    signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return signed, int(query["X-Amz-Expires"][0])


def test_a_link_is_reused_within_its_window_and_keeps_nine_tenths_of_its_life() -> None:
    settings = Settings.from_env(environ={}, presign_expiry_s=900)
    clock = Clock(datetime(2026, 12, 3, 12, 0, 5, tzinfo=UTC))
    presigner = Presigner(settings, clock=clock)

    first = presigner.download_url("outputs", KEY, "photo.jpg")
    clock.now += timedelta(seconds=80)  # 12:01:25, still in the 90 s window that began at 12:00:00
    again = presigner.download_url("outputs", KEY, "photo.jpg")

    assert again == first
    signed, lifetime = signed_at_and_lifetime(again)
    assert signed == datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
    assert lifetime == 900
    assert signed + timedelta(seconds=lifetime) - clock.now >= timedelta(seconds=810)


def test_a_new_window_signs_afresh_and_other_names_get_their_own_link() -> None:
    settings = Settings.from_env(environ={}, presign_expiry_s=900)
    clock = Clock(datetime(2026, 12, 3, 12, 1, 29, tzinfo=UTC))
    presigner = Presigner(settings, clock=clock)
    before = presigner.download_url("outputs", KEY, "photo.jpg")

    assert presigner.download_url("outputs", KEY, "other.jpg") != before
    assert presigner.download_url("outputs", KEY.replace("photo", "picture"), "photo.jpg") != before

    clock.now += timedelta(seconds=2)  # 12:01:31: the next window
    after = presigner.download_url("outputs", KEY, "photo.jpg")
    assert after != before
    assert signed_at_and_lifetime(after)[0] == datetime(2026, 12, 3, 12, 1, 30, tzinfo=UTC)
