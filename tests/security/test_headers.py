"""Security headers on every response of ingest and the notifier, and metrics off the public port.

Issue 17: the page's CSP was a ``<meta>`` tag (no ``frame-ancestors``, any http(s)/ws host
allowed), no ``X-Frame-Options`` or ``Referrer-Policy``, ``nosniff`` only on the archive, and
``Server`` named the Python and aiohttp versions. The page under these headers in Chromium, and a
foreign page failing to frame it, are in tests/web/test_page.py.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping

import aiohttp
import pytest

from harness.progress import seed_batch
from harness.subscribers import stream_url
from photoenhance.settings import Settings
from tests.ingest.conftest import StartIngest, image_file
from tests.notifier.conftest import SpawnNotifier, StartNotifier

pytestmark = pytest.mark.security

FIXED = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "server": "PhotoEnhance",
}


def directives(policy: str) -> dict[str, list[str]]:
    out = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


def check_headers(headers: Mapping[str, str], where: str) -> dict[str, list[str]]:
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, value in FIXED.items():
        assert lowered.get(name) == value, (where, name, lowered.get(name))
    policy = directives(lowered.get("content-security-policy", ""))
    assert policy.get("frame-ancestors") == ["'none'"], (where, policy)
    return policy


async def test_every_ingest_response_carries_the_headers(start_ingest: StartIngest, settings: Settings) -> None:
    ingest = await start_ingest(
        settings.replace(s3_public_endpoint="https://store.example.test:9443", notifier_public_url="https://live.example.test/pe")
    )
    created = await ingest.create([image_file()])
    auth = {"Authorization": f"Bearer {created['token']}"}
    answers = {
        "page": ("GET", "/", {}),
        "script": ("GET", "/static/app.js", {}),
        "style": ("GET", "/static/style.css", {}),
        "status": ("GET", f"/api/v1/batches/{created['batch_id']}", auth),
        "unknown batch": ("GET", f"/api/v1/batches/{created['batch_id'][:-1]}Z", auth),
        "openapi": ("GET", "/api/v1/openapi.json", {}),
        "health": ("GET", "/healthz", {}),
        "no route": ("GET", "/nope", {}),
        "wrong method": ("DELETE", "/api/v1/batches", {}),
        "not json": ("POST", "/api/v1/batches", {"Content-Type": "text/plain"}),
    }
    for where, (method, path, headers) in answers.items():
        body = b"x" if method == "POST" else None
        async with ingest.http.request(method, ingest.url(path), headers=headers, data=body) as response:
            await response.read()
            policy = check_headers(response.headers, where)
            assert "Python" not in response.headers["Server"] and "aiohttp" not in response.headers["Server"]
        # the page's policy: no inline script, sources only the API, the notifier and the store
        assert policy["script-src"] == ["'self'"], where
        assert policy["style-src"] == ["'self'"], where
        assert policy["default-src"] == ["'none'"], where
        assert sorted(policy["connect-src"]) == sorted(
            ["'self'", "https://store.example.test:9443", "https://live.example.test", "wss://live.example.test"]
        ), where
        assert sorted(policy["img-src"]) == sorted(["'self'", "blob:", "https://store.example.test:9443"]), where


async def test_the_page_has_no_inline_script_or_style(start_ingest: StartIngest, settings: Settings) -> None:
    ingest = await start_ingest(settings)
    async with ingest.http.get(ingest.url("/")) as response:
        html = await response.text()
    assert "<meta http-equiv" not in html.lower()
    assert "<style" not in html.lower() and " style=" not in html.lower()
    for tag in html.lower().split("<script")[1:]:
        assert "src=" in tag.split(">", 1)[0] and tag.split(">", 1)[1].startswith("</script"), tag[:80]


async def test_every_notifier_response_carries_the_headers(
    start_notifier: StartNotifier, repository, http: aiohttp.ClientSession  # type: ignore[no-untyped-def]
) -> None:
    notifier = await start_notifier()
    batch = await seed_batch(repository, "hdr", 1)
    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }
    answers = {
        "health": (notifier.base_url + "/healthz", {}),
        "refusal": (stream_url(notifier.base_url, "sse", "hdr", token="wrong"), {}),
        "no route": (notifier.base_url + "/nope", {}),
        "sse stream": (stream_url(notifier.base_url, "sse", "hdr", token=batch.token), {}),
        "websocket handshake": (
            stream_url(notifier.base_url, "sse", "hdr", token=batch.token).replace("/events/", "/ws/"), upgrade
        ),
    }
    for where, (url, headers) in answers.items():
        async with http.get(url, headers=headers) as response:
            check_headers(response.headers, where)
            assert response.status in (101, 200, 404), where


async def test_notifier_metrics_are_not_on_the_public_port(spawn_notifier: SpawnNotifier, http: aiohttp.ClientSession) -> None:
    notifier = await spawn_notifier()
    async with http.get(notifier.base_url + "/metrics") as response:
        assert response.status == 404
    async with http.get(notifier.metrics_url) as response:
        assert response.status == 200
        assert "notifier_connections" in await response.text()
    assert notifier.metrics_url.split("/")[2] != notifier.base_url.split("/")[2]
