"""The notifier's Prometheus metrics, served at ``/metrics``.

Each app gets its own registry (no process-wide globals), so tests and several apps in one process
never share counters.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST as _CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from photoenhance.contracts.progress_stream import MessageKind

__all__ = ["CONTENT_TYPE", "NotifierMetrics", "TransportObserver"]

#: Content type of :meth:`NotifierMetrics.render`'s output.
CONTENT_TYPE = _CONTENT_TYPE


class NotifierMetrics:
    """Connections, messages sent, replays, slow clients, catch-ups and bound batches."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        #: Open subscriber connections, by transport (``ws``, ``sse``).
        self.connections = Gauge("notifier_connections", "Open subscriber connections.", ["transport"], registry=r)
        #: Subscriptions accepted since start, by transport.
        self.connections_opened = Counter(
            "notifier_connections_opened", "Subscriptions accepted.", ["transport"], registry=r
        )
        #: Subscriptions refused (unknown batch, bad token, bad ``since``: one answer for all).
        self.refused = Counter("notifier_refused", "Subscriptions refused.", ["transport"], registry=r)
        #: Progress events sent, by transport and source (``replay`` from the DB, ``live``).
        self.events_sent = Counter(
            "notifier_events_sent", "Progress events sent to subscribers.", ["transport", "source"], registry=r
        )
        #: Snapshots and ``since`` replays started, by transport and mode.
        self.replays = Counter(
            "notifier_replays", "Streams opened with a snapshot or a since replay.", ["transport", "mode"], registry=r
        )
        #: Connections closed because the client fell too far behind.
        self.slow_closes = Counter(
            "notifier_slow_closes", "Connections closed for falling behind.", ["transport"], registry=r
        )
        #: Database reads made because live events had a gap or the broker reconnected.
        self.catch_ups = Counter(
            "notifier_catch_ups", "Database catch-ups during live streaming.", ["reason"], registry=r
        )
        #: Batches currently bound to this process's queue.
        self.bound_batches = Gauge("notifier_bound_batches", "Batches bound on the progress exchange.", registry=r)

    def observer(self, transport: str) -> TransportObserver:
        """An observer for one stream (see :class:`notifier.stream.Observer`)."""
        return TransportObserver(self, transport)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class TransportObserver:
    """Counts what one stream sends, labelled with its transport."""

    def __init__(self, metrics: NotifierMetrics, transport: str) -> None:
        self._metrics = metrics
        # Looked up once: this runs for every message to every client.
        self._events = {source: metrics.events_sent.labels(transport, source) for source in ("replay", "live")}

    def sent(self, kind: MessageKind, source: str) -> None:
        """Count an event message (snapshots are counted as replays when they start)."""
        if kind is MessageKind.EVENT:
            self._events[source].inc()

    def caught_up(self, reason: str) -> None:
        """Count a database catch-up."""
        self._metrics.catch_ups.labels(reason).inc()
