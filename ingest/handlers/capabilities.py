"""``GET /api/v1/capabilities``: what the fleet serves now (see :mod:`ingest.fleet`)."""

from __future__ import annotations

from aiohttp import web

from ingest.context import CONTEXT
from ingest.fleet import capabilities

__all__ = ["get_capabilities"]


async def get_capabilities(request: web.Request) -> web.Response:
    """Levels served now (workers, devices, speed per level), the default level and why, upscale
    range, accepted formats and size limits. Public: it says nothing about any batch."""
    body = await capabilities(request.app[CONTEXT])
    return web.json_response(body, headers={"Cache-Control": "no-store"})
