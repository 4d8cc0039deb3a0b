"""Which webhook URLs may be called, checked when a batch names one and again at each delivery.

A URL must be https (http only with ``WEBHOOK_ALLOW_HTTP``, for development), at most
``MAX_URL_LENGTH`` characters, without credentials, and its host must resolve only to public
addresses: loopback, private, link-local (cloud metadata at 169.254.169.254 included), multicast,
reserved and unspecified addresses are refused unless ``WEBHOOK_ALLOW_PRIVATE`` lists them. At
delivery the connection goes to exactly the addresses that were checked (:class:`CheckedResolver`),
so a DNS answer that changes between check and connect (rebinding) cannot redirect it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

from photoenhance.settings import Settings

__all__ = [
    "MAX_URL_LENGTH",
    "CheckedResolver",
    "WebhookUrl",
    "WebhookUrlError",
    "check_address",
    "parse_webhook_url",
    "resolve_checked",
]

MAX_URL_LENGTH = 2048

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class WebhookUrlError(ValueError):
    """A webhook URL that may not be called: a stable ``code`` and plain words."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class WebhookUrl:
    """A webhook URL that passed the checks that need no DNS."""

    url: str
    scheme: str
    host: str
    port: int


def parse_webhook_url(url: Any, settings: Settings) -> WebhookUrl:
    """Check everything about a URL but where it resolves to; raise :class:`WebhookUrlError`."""
    if not isinstance(url, str) or not url:
        raise WebhookUrlError("webhook_url_invalid", "the webhook URL must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise WebhookUrlError("webhook_url_too_long", f"the webhook URL is longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise WebhookUrlError("webhook_url_invalid", "the webhook URL holds spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlError("webhook_url_invalid", f"not a URL: {exc}") from exc
    allowed = {"https", "http"} if settings.webhook_allow_http else {"https"}
    if parts.scheme not in allowed:
        raise WebhookUrlError("webhook_url_scheme", f"the webhook URL must use {' or '.join(sorted(allowed))}")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise WebhookUrlError("webhook_url_credentials", "the webhook URL may not hold credentials (user:password@)")
    if not parts.hostname:
        raise WebhookUrlError("webhook_url_invalid", "the webhook URL has no host")
    default = 443 if parts.scheme == "https" else 80
    return WebhookUrl(url=url, scheme=parts.scheme, host=parts.hostname, port=port or default)


def check_address(address: str, allow_private: Sequence[Network]) -> None:
    """Refuse an address that is not public unless ``allow_private`` holds it."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip.version == net.version and ip in net for net in allow_private):
        return
    if not ip.is_global or ip.is_multicast:
        kind = (
            "loopback" if ip.is_loopback
            else "link-local (cloud metadata lives there)" if ip.is_link_local
            else "private" if ip.is_private
            else "not public"
        )
        raise WebhookUrlError("webhook_url_not_public", f"the webhook host resolves to {ip}, a {kind} address")


def allowed_private(settings: Settings) -> tuple[Network, ...]:
    """``WEBHOOK_ALLOW_PRIVATE`` as networks."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in settings.webhook_allow_private)


async def resolve_checked(target: WebhookUrl, settings: Settings) -> list[str]:
    """The host's addresses, every one of them checked; :class:`WebhookUrlError` otherwise."""
    try:
        ipaddress.ip_address(target.host)
        addresses = [target.host]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                target.host, target.port, type=socket.SOCK_STREAM
            )
        except (socket.gaierror, UnicodeError) as exc:
            raise WebhookUrlError("webhook_url_unresolvable", f"the webhook host {target.host} does not resolve") from exc
        addresses = sorted({info[4][0] for info in infos})
    if not addresses:
        raise WebhookUrlError("webhook_url_unresolvable", f"the webhook host {target.host} does not resolve")
    networks = allowed_private(settings)
    for address in addresses:
        check_address(address, networks)
    return addresses


class CheckedResolver(AbstractResolver):
    """An aiohttp resolver that resolves once, checks every address, and connects only to those.

    Used by the sender's HTTP client: whatever the URL says, the TCP connection goes to an address
    that passed :func:`check_address` in this very resolution.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        addresses = await resolve_checked(WebhookUrl(url="", scheme="", host=host, port=port), self._settings)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None
