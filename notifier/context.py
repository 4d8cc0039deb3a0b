"""What every notifier handler needs, created once at start-up and kept on the app."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from db.records import BatchRecord
from db.repository import Repository
from notifier.auth import Refused, authorize, presented_token, refusal
from notifier.hub import Hub
from notifier.metrics import NotifierMetrics
from notifier.stream import Outcome, Sink, pump, supervise
from photoenhance.settings import Settings

__all__ = ["CONTEXT", "NotifierContext"]

log = logging.getLogger(__name__)


@dataclass
class NotifierContext:
    """The notifier's dependencies and its shutdown signal."""

    settings: Settings
    repository: Repository
    hub: Hub
    metrics: NotifierMetrics
    #: Set when the server begins shutting down; every open stream then closes with "going away".
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def admit(self, request: web.Request, transport: str, since_raw: str | None) -> (
        tuple[BatchRecord, int | None] | web.Response
    ):
        """The batch and position a subscription asks for, or the refusal to answer with."""
        try:
            batch, since = await authorize(
                self.repository,
                self.settings.api_keys,
                request.match_info["batch_id"],
                presented_token(request),
                since_raw,
            )
        except Refused:
            self.metrics.refused.labels(transport).inc()
            return refusal()
        except (SQLAlchemyError, OSError):
            # The same for every batch, so it tells nothing about this one.
            log.exception("cannot read the batch for a subscription")
            return web.json_response(
                {"code": "unavailable", "message": "Progress is unavailable right now; try again."}, status=503
            )
        return batch, since

    async def stream(
        self,
        transport: str,
        batch: BatchRecord,
        since: int | None,
        sink: Sink,
        client_closed: Awaitable[None] | None = None,
    ) -> Outcome:
        """Subscribe, then run the batch's stream into ``sink`` until it ends one way or another."""
        async with self.hub.subscribe(batch.id, self.settings.ws_send_queue_max) as inbox:
            outcome = await supervise(
                pump(
                    batch=batch,
                    since=since,
                    repository=self.repository,
                    inbox=inbox,
                    sink=sink,
                    heartbeat_s=self.settings.ws_heartbeat_s,
                    observer=self.metrics.observer(transport),
                ),
                inbox=inbox,
                stopping=self.stopping,
                client_closed=client_closed,
            )
        if outcome is Outcome.TOO_SLOW:
            self.metrics.slow_closes.labels(transport).inc()
        return outcome

    @contextmanager
    def connection(self, transport: str, since: int | None) -> Iterator[None]:
        """Count an accepted subscription, and an open connection while inside the block."""
        self.metrics.connections_opened.labels(transport).inc()
        self.metrics.replays.labels(transport, "snapshot" if since is None else "since").inc()
        gauge = self.metrics.connections.labels(transport)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()


#: Where the app keeps its :class:`NotifierContext`.
CONTEXT = web.AppKey("notifier", NotifierContext)
