"""The ingest API's aiohttp application: routes, dependencies and life cycle.

Routes (described for clients in :mod:`ingest.openapi`):

- ``POST /api/v1/batches`` create a batch with presigned uploads (:mod:`ingest.handlers.batches`)
- ``GET  /api/v1/batches/{batch_id}`` status, per-image state, result links
- ``GET  /api/v1/batches/{batch_id}/archive`` streamed ZIP (:mod:`ingest.handlers.archive`)
- ``POST /api/v1/batches/{batch_id}/retry`` re-run failed images
- ``POST /api/v1/batches/{batch_id}/cancel`` stop a batch (:mod:`ingest.handlers.cancel`)
- ``GET  /api/v1/batches/{batch_id}/deliveries`` webhook deliveries (:mod:`ingest.handlers.deliveries`)
- ``GET  /api/v1/openapi.json`` and ``GET /healthz``
- ``GET  /`` and ``/static/...``: the web page, when ``ingest/web/index.html`` exists
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
from aiohttp import web
from sqlalchemy import text

from db.repository import Repository
from ingest.context import CONTEXT, IngestContext
from ingest.errors import error_middleware
from ingest.handlers.archive import get_archive
from ingest.handlers.batches import create_batch, get_batch, retry_batch
from ingest.handlers.cancel import cancel_batch
from ingest.handlers.capabilities import get_capabilities
from ingest.handlers.deliveries import get_deliveries
from ingest.openapi import openapi_document
from ingest.presign import Presigner
from ingest.publisher import EventPublisher
from ingest.quotas import parse_networks
from photoenhance.security_headers import install_security_headers, page_policy
from photoenhance.settings import Settings

__all__ = ["WEB_DIR", "add_web_routes", "create_app"]

#: Where the web page lives (issue 7 fills it); served at ``/`` when it has an ``index.html``.
WEB_DIR = Path(__file__).with_name("web")

#: Request body allowance per declared file (a 255-character name, escaped, with its fields).
_BODY_BYTES_PER_FILE = 2048


def create_app(
    settings: Settings,
    *,
    repository: Repository,
    presigner: Presigner | None = None,
    publisher: EventPublisher | None = None,
    web_dir: Path | None = WEB_DIR,
) -> web.Application:
    """The ingest app over the given dependencies; it closes the publisher when it stops."""
    parse_networks(settings.trusted_proxies)  # a bad TRUSTED_PROXIES entry stops start-up, naming it
    app = web.Application(
        middlewares=[error_middleware],
        client_max_size=64 * 1024 + _BODY_BYTES_PER_FILE * settings.max_files_per_batch,
    )
    app[CONTEXT] = IngestContext(
        settings=settings,
        repository=repository,
        presigner=presigner or Presigner(settings),
        publisher=publisher or EventPublisher(settings),
    )
    app.router.add_post("/api/v1/batches", create_batch)
    app.router.add_get("/api/v1/batches/{batch_id}", get_batch)
    app.router.add_get("/api/v1/batches/{batch_id}/archive", get_archive)
    app.router.add_post("/api/v1/batches/{batch_id}/retry", retry_batch)
    app.router.add_post("/api/v1/batches/{batch_id}/cancel", cancel_batch)
    app.router.add_get("/api/v1/batches/{batch_id}/deliveries", get_deliveries)
    app.router.add_get("/api/v1/capabilities", get_capabilities)
    app.router.add_get("/api/v1/openapi.json", _openapi)
    app.router.add_get("/healthz", _healthz)
    if web_dir is not None and (web_dir / "index.html").is_file():
        add_web_routes(app, web_dir)
    install_security_headers(app, page_policy(settings))
    app.cleanup_ctx.append(_clients)
    return app


def add_web_routes(app: web.Application, web_dir: Path) -> None:
    """Serve ``web_dir/index.html`` at ``/`` and the folder's files under ``/static/``.

    The hook for the web page: it is a static client of this same API, so it needs no handler
    of its own.
    """
    index = web_dir / "index.html"

    async def _index(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(index, headers={"Cache-Control": "no-cache"})

    app.router.add_get("/", _index)
    app.router.add_static("/static/", web_dir, follow_symlinks=False)


async def _clients(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CONTEXT]
    # Result objects are read through this client; its reader pauses when its buffer is full,
    # which is what keeps the archive's memory flat while the downloader is slower than the store.
    ctx.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60))
    ctx.cpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-cpu")
    try:
        yield
    finally:
        await ctx.http.close()
        ctx.http = None
        ctx.cpu.shutdown(wait=False, cancel_futures=True)
        ctx.cpu = None
        await ctx.publisher.close()


async def _openapi(request: web.Request) -> web.Response:
    document = openapi_document(request.app[CONTEXT].settings)
    return web.Response(text=json.dumps(document, indent=1), content_type="application/json")


async def _healthz(request: web.Request) -> web.Response:
    try:
        async with request.app[CONTEXT].repository.db.read() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to answer means unhealthy; say which
        return web.json_response({"database": "down", "error": type(exc).__name__}, status=503)
    return web.json_response({"database": "up"})
