"""The pure parts of quotas: window arithmetic, subjects, and who the client is behind proxies."""

from __future__ import annotations

import pytest

from ingest.quotas import client_address, parse_networks, plan_for, subject_for
from photoenhance.ratelimit import DAY, HOUR, retry_after_s, window_start
from photoenhance.settings import Settings

PROXIES = parse_networks(["10.0.0.0/8", "192.0.2.7"])


def test_windows_are_fixed_and_retry_after_counts_to_their_end() -> None:
    assert window_start(7200.0, HOUR) == 7200
    assert window_start(10799.9, HOUR) == 7200
    assert retry_after_s(7200.0, HOUR) == 3600
    assert retry_after_s(10799.2, HOUR) == 1  # rounded up, never 0
    assert retry_after_s(DAY + 60.5, DAY) == DAY - 60


def test_a_forwarded_header_from_an_untrusted_peer_is_ignored() -> None:
    assert client_address("203.0.113.9", ["1.2.3.4"], PROXIES) == "203.0.113.9"
    assert client_address("203.0.113.9", [], ()) == "203.0.113.9"


def test_behind_trusted_proxies_the_nearest_untrusted_hop_is_the_client() -> None:
    # The client forged "6.6.6.6"; the proxy appended the address it really saw.
    assert client_address("10.1.1.1", ["6.6.6.6, 198.51.100.4"], PROXIES) == "198.51.100.4"
    # Two trusted proxies in a row, headers split over two lines.
    assert client_address("10.1.1.1", ["198.51.100.4", "192.0.2.7"], PROXIES) == "198.51.100.4"
    # A proxy without a header: the proxy itself is all we know.
    assert client_address("10.1.1.1", [], PROXIES) == "10.1.1.1"
    # Garbage in the header stops the walk at the last real address.
    assert client_address("10.1.1.1", ["not-an-ip"], PROXIES) == "10.1.1.1"


def test_subjects_hash_api_keys_and_group_ipv6_by_64() -> None:
    key = subject_for("secret-key", "")
    assert key.startswith("key:") and "secret-key" not in key and len(key) <= 80
    assert subject_for(None, "2001:db8:1:2:aaaa::1") == subject_for(None, "2001:db8:1:2:bbbb::9")
    assert subject_for(None, "2001:db8:1:2::1") != subject_for(None, "2001:db8:1:3::1")
    assert subject_for(None, "::ffff:198.51.100.4") == "addr:198.51.100.4"


def test_bad_trusted_proxy_entries_are_named() -> None:
    with pytest.raises(ValueError, match="nonsense"):
        parse_networks(["nonsense"])


def test_public_and_keyed_limits_come_from_their_settings() -> None:
    settings = Settings.from_env(environ={}, quota_public_files_per_day=11, quota_key_files_per_day=22)
    public = plan_for(settings, "addr:x", keyed=False, files=3, total_bytes=300)
    keyed = plan_for(settings, "key:y", keyed=True, files=3, total_bytes=300)
    assert [(c.counter, c.amount) for c in public.charges] == [("batches", 1), ("files", 3), ("bytes", 300)]
    assert public.charges[1].limit == 11 and keyed.charges[1].limit == 22
    assert public.charges[0].code == "quota_batches_per_hour" and public.charges[2].code == "quota_bytes_per_day"
