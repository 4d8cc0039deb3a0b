"""The notifier's aiohttp application: routes, dependencies and life cycle.

Routes:

- ``GET /ws/batches/{batch_id}``: WebSocket progress stream (:mod:`notifier.ws`);
- ``GET /events/batches/{batch_id}``: the same as Server-Sent Events (:mod:`notifier.sse`);
- ``GET /healthz``: 200 while the broker connection is up, else 503 (streams still replay from
  the database meanwhile, but live events wait for the broker);
- ``GET /metrics``: Prometheus metrics (:mod:`notifier.metrics`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from db.repository import Repository
from notifier.context import CONTEXT, NotifierContext
from notifier.hub import Hub
from notifier.metrics import CONTENT_TYPE, NotifierMetrics
from notifier.sse import handle_sse
from notifier.ws import handle_ws
from photoenhance.settings import Settings

__all__ = ["create_app"]


def create_app(
    settings: Settings, *, repository: Repository, hub: Hub, metrics: NotifierMetrics
) -> web.Application:
    """The notifier app over the given dependencies; the app starts and closes ``hub`` itself."""
    app = web.Application()
    app[CONTEXT] = NotifierContext(settings=settings, repository=repository, hub=hub, metrics=metrics)
    app.router.add_get("/ws/batches/{batch_id}", handle_ws)
    app.router.add_get("/events/batches/{batch_id}", handle_sse)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    app.cleanup_ctx.append(_hub_running)
    app.on_shutdown.append(_stop_streams)
    return app


async def _hub_running(app: web.Application) -> AsyncIterator[None]:
    hub = app[CONTEXT].hub
    await hub.start()
    try:
        yield
    finally:
        await hub.close()


async def _stop_streams(app: web.Application) -> None:
    # Every stream closes with "going away"; clients reconnect (to another replica) with since.
    app[CONTEXT].stopping.set()


async def _healthz(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    up = ctx.hub.connected
    return web.json_response({"broker": "up" if up else "down"}, status=200 if up else 503)


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[CONTEXT].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
