"""Security headers on every HTTP response of ingest and the notifier.

One ``on_response_prepare`` hook per app sets them just before the status line goes out, so they
reach every answer: JSON, errors (including aiohttp's own 404/405/413), static files, streamed
archives, Server-Sent Events and the WebSocket handshake.

- ``Content-Security-Policy``: a header, not a ``<meta>`` tag (a tag cannot carry
  ``frame-ancestors``). The page's policy lets scripts and styles come only from ingest itself (no
  inline script or style), and lets it talk to nothing but the API (``'self'``), the notifier and
  the object store, whose origins come from the settings.
- ``X-Frame-Options: DENY`` for browsers that predate ``frame-ancestors``: no other site can frame
  the page and trick a visitor into pressing its buttons.
- ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer`` (presigned links and
  tokens in URLs never leave in a ``Referer``).
- ``Server: PhotoEnhance``: no Python or aiohttp version for a scanner to match against.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from aiohttp import web

from photoenhance.settings import Settings

__all__ = [
    "API_POLICY",
    "SERVER_NAME",
    "install_security_headers",
    "notifier_origins",
    "origin",
    "page_policy",
    "security_headers",
]

#: What ``Server`` says: the product, never a version.
SERVER_NAME = "PhotoEnhance"

#: The policy of responses that are never rendered as a page (the notifier's, the API's JSON):
#: nothing may load, nothing may frame them.
API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` (what CSP source lists name)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def notifier_origins(settings: Settings) -> tuple[str, str]:
    """The notifier's HTTP and WebSocket origins, as the progress URLs the API hands out name them."""
    base = settings.notifier_public_url.rstrip("/") or f"http://{settings.notifier_host}:{settings.notifier_port}"
    http = origin(base)
    scheme, _, rest = http.partition("://")
    return http, f"{'wss' if scheme == 'https' else 'ws'}://{rest}"


def page_policy(settings: Settings) -> str:
    """The web page's Content-Security-Policy: sources limited to ingest, the notifier and the store."""
    store = origin(settings.presign_endpoint)
    notifier_http, notifier_ws = notifier_origins(settings)
    connect = _unique(["'self'", store, notifier_http, notifier_ws])
    images = _unique(["'self'", "blob:", store])  # blob: the previews of picked files
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {' '.join(images)}",
            f"connect-src {' '.join(connect)}",
            "form-action 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )


def security_headers(policy: str) -> dict[str, str]:
    """Every header set on each response, with ``policy`` as the Content-Security-Policy."""
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Server": SERVER_NAME,
    }


def install_security_headers(app: web.Application, policy: str) -> None:
    """Set :func:`security_headers` on every response ``app`` sends."""
    headers: Mapping[str, str] = security_headers(policy)

    async def _add(_request: web.Request, response: web.StreamResponse) -> None:
        # Replace, not setdefault: aiohttp would otherwise name its version in Server.
        response.headers.update(headers)

    app.on_response_prepare.append(_add)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
