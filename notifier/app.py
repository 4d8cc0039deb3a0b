"""The notifier's aiohttp application: routes, dependencies and life cycle.

Routes:

- ``GET /ws/batches/{batch_id}``: WebSocket progress stream (:mod:`notifier.ws`);
- ``GET /events/batches/{batch_id}``: the same as Server-Sent Events (:mod:`notifier.sse`);
- ``GET /healthz``: 200 while the broker connection is up, else 503 (streams still replay from
  the database meanwhile, but live events wait for the broker);

:func:`create_metrics_app` serves ``GET /metrics`` (Prometheus, :mod:`notifier.metrics`) on a port
of its own (``NOTIFIER_METRICS_HOST``/``NOTIFIER_METRICS_PORT``): the public port carries progress
streams to anonymous browsers, and what the metrics say (connections, refusals) is for operators.
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
from photoenhance.security_headers import API_POLICY, install_security_headers
from photoenhance.settings import Settings

__all__ = ["create_app", "create_metrics_app"]


def create_app(
    settings: Settings, *, repository: Repository, hub: Hub, metrics: NotifierMetrics
) -> web.Application:
    """The notifier app over the given dependencies; the app starts and closes ``hub`` itself."""
    app = web.Application()
    app[CONTEXT] = NotifierContext(settings=settings, repository=repository, hub=hub, metrics=metrics)
    app.router.add_get("/ws/batches/{batch_id}", handle_ws)
    app.router.add_get("/events/batches/{batch_id}", handle_sse)
    app.router.add_get("/healthz", _healthz)
    install_security_headers(app, API_POLICY)
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


def create_metrics_app(metrics: NotifierMetrics) -> web.Application:
    """The operators' app: ``GET /metrics`` only, served apart from the public streams."""

    async def _metrics(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    install_security_headers(app, API_POLICY)
    return app
