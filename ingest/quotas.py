"""Quotas and rate limits for batch creation: who is asking and what a request costs (pure).

Every limit is a fixed window counted in the database (:mod:`db.quotas`), so every ingest replica
shares it: batches per hour, files and bytes per day, and open batches at once (a gauge, read from
the batches table, not a window). A fixed window lets a client spend one window's allowance at its
end and the next one's at the start of the next (at most twice the rate for a moment); in exchange
the check is one conditional ``UPDATE`` per counter, exact under any number of replicas. No
maintained rate-limit library keeps its state in a SQL database (``limits`` speaks Redis,
Memcached and MongoDB), hence the small algorithm in :mod:`photoenhance.ratelimit`.

Who is asking (the *subject*): the API key when the request carries a valid one (its SHA-256, so
the key never reaches the database), otherwise the client's address. The address is the TCP peer,
unless the peer is one of ``TRUSTED_PROXIES``: then ``X-Forwarded-For`` is read from the right,
skipping trusted proxies, and the first address that is not one is the client. A header sent by
an untrusted peer is ignored (anyone can write one). IPv6 clients are counted per /64, the block
one subscriber usually holds.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence

from photoenhance.ratelimit import DAY, HOUR, Charge, QuotaPlan
from photoenhance.settings import Settings

__all__ = ["client_address", "parse_networks", "plan_for", "request_plan", "subject_for"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def plan_for(settings: Settings, subject: str, *, keyed: bool, files: int, total_bytes: int) -> QuotaPlan:
    """The charges of creating one batch of ``files`` files and ``total_bytes`` declared bytes.

    ``keyed``: the request carries an API key (server-to-server limits) rather than coming from
    the public page.
    """
    if keyed:
        batches, per_day, bytes_per_day, open_ = (
            settings.quota_key_batches_per_hour,
            settings.quota_key_files_per_day,
            settings.quota_key_bytes_per_day,
            settings.quota_key_open_batches,
        )
    else:
        batches, per_day, bytes_per_day, open_ = (
            settings.quota_public_batches_per_hour,
            settings.quota_public_files_per_day,
            settings.quota_public_bytes_per_day,
            settings.quota_public_open_batches,
        )
    # The batches counter comes first: its row is what concurrent creations of one subject
    # queue on, which also makes the open-batch count that follows exact (see db.quotas).
    return QuotaPlan(
        subject=subject,
        charges=(
            Charge("batches", 1, batches, HOUR),
            Charge("files", files, per_day, DAY),
            Charge("bytes", total_bytes, bytes_per_day, DAY),
        ),
        open_batches=open_,
    )


def subject_for(api_key: str | None, address: str) -> str:
    """The quota subject: ``key:<hash>`` for an API key, else ``addr:<address or /64 block>``."""
    if api_key is not None:
        return "key:" + hashlib.sha256(api_key.encode()).hexdigest()[:40]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "addr:" + address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"addr:{ip.ipv4_mapped}"
        return f"addr:{ipaddress.IPv6Network((int(ip) >> 64 << 64, 64))}"
    return f"addr:{ip}"


def parse_networks(entries: Sequence[str]) -> tuple[Network, ...]:
    """``TRUSTED_PROXIES`` entries (addresses or CIDR blocks) as networks; ValueError names a bad one."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"TRUSTED_PROXIES: {entry!r} is not an address or network") from exc
    return tuple(networks)


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client's address: the peer, or, behind trusted proxies, the nearest untrusted hop.

    ``forwarded_for``: every ``X-Forwarded-For`` header of the request, in order. Hops are read
    right to left (each proxy appends the address it received the request from); a hop that is not
    an address ends the walk there, at the last address that was one.
    """
    current = peer or "unknown"
    if not _is_trusted(current, trusted):
        return current
    hops = [h.strip() for header in forwarded_for for h in header.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return current
        current = hop
        if not _is_trusted(current, trusted):
            return current
    return current


def _is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in trusted)


def request_plan(
    settings: Settings,
    *,
    api_key: str | None,
    peer: str | None,
    forwarded_for: Sequence[str],
    files: int,
    total_bytes: int,
) -> QuotaPlan:
    """The plan of one batch creation: by API key when there is one, else by client address."""
    if api_key is not None:
        subject = subject_for(api_key, "")
    else:
        subject = subject_for(None, client_address(peer, forwarded_for, parse_networks(settings.trusted_proxies)))
    return plan_for(settings, subject, keyed=api_key is not None, files=files, total_bytes=total_bytes)
