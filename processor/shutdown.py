"""Graceful shutdown: SIGTERM or SIGINT stops consumption; in-flight work gets a bounded grace.

The sequence (run by :class:`processor.worker.Worker`): cancel the consumers so no new message
arrives; let the messages in flight finish for up to ``SHUTDOWN_GRACE_S``; cancel what is left,
which hands those images' claims back (pending) and leaves their messages unacknowledged, so the
broker redelivers them to another worker when the channel closes; then close the connection.
A second signal skips the rest of the grace.
"""

from __future__ import annotations

import asyncio
import logging
import signal

__all__ = ["ShutdownSignals"]

log = logging.getLogger(__name__)

#: The signals that ask a worker to stop.
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ShutdownSignals:
    """Turns SIGTERM/SIGINT into events: :attr:`requested` on the first, :attr:`hurry` on the second."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.hurry = asyncio.Event()

    def install(self) -> None:
        """Handle the signals on the running loop (call from the loop's thread)."""
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)

    def uninstall(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.requested.is_set():
            log.warning("%s again: leaving in-flight work for redelivery now", sig.name)
            self.hurry.set()
            return
        log.info("%s: stopping consumption, finishing in-flight work", sig.name)
        self.requested.set()
