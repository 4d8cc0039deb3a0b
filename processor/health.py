"""``/healthz`` and ``/metrics`` for one worker, served by aiohttp beside the consumer.

``/healthz`` answers 200 while the worker is connected to the broker and consuming, 503 while it
is starting, reconnecting or shutting down (a JSON body says which); Kubernetes' probes and the
tests read it. ``/metrics`` is the Prometheus text format of :class:`ProcessorMetrics`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from processor.metrics import ProcessorMetrics

__all__ = ["HealthServer", "create_app"]


def create_app(metrics: ProcessorMetrics, status: Callable[[], dict[str, Any]]) -> web.Application:
    """The app; ``status()`` returns a dict whose ``ok`` says whether the worker is healthy."""

    async def healthz(_request: web.Request) -> web.Response:
        body = status()
        return web.json_response(body, status=200 if body.get("ok") else 503)

    async def prometheus(_request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(metrics.registry))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus)
    return app


class HealthServer:
    """Runs :func:`create_app` on ``host:port`` (port 0 picks a free one; see :attr:`port`)."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        self._host = host
        self._port = port
        self.port = port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        await self._runner.cleanup()
