"""The batch lock as PostgreSQL sees it: how many ``batches`` rows are locked, sampled.

A worker can only time its lock from its own side: from the locking statement's reply to the
COMMIT's reply, each of which reaches it late when its process waits for a core. The row is
locked on the server from the UPDATE to the end of the commit, and other workers wait only for
that. :class:`RowLockSampler` asks the server itself (the ``pgrowlocks`` extension, PostgreSQL's
contrib) as often as it can, from a thread of its own, and :func:`mean_locked` is the mean number
of locked rows over the samples: for one batch, the share of the time its lock is held (the
server's figure for "lock time per image × images/s"); for several, their sum.

Sampling costs a little CPU (about a thousand small queries a second), so ``bench.ceiling`` runs
it only when asked (``--sample-locks``).
"""

from __future__ import annotations

import asyncio
import threading
import time

import asyncpg

__all__ = ["RowLockSampler", "mean_locked"]

_COUNT_LOCKED = "SELECT count(*) FROM pgrowlocks('batches')"


def mean_locked(samples: list[tuple[float, int]], start: float, end: float) -> float | None:
    """The mean of the locked-row counts sampled between ``start`` and ``end`` (``time.time()``);
    None when no sample fell there."""
    inside = [count for at, count in samples if start <= at <= end]
    return sum(inside) / len(inside) if inside else None


class RowLockSampler:
    """Samples the locked rows of ``batches`` in the database at ``url`` until :meth:`stop`."""

    def __init__(self, url: str, interval_s: float = 0.001) -> None:
        self.url = url.replace("postgresql+asyncpg://", "postgresql://")
        self.interval_s = interval_s
        #: (``time.time()``, rows locked) per sample.
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="row-lock-sampler", daemon=True)

    def start(self) -> RowLockSampler:
        """Start sampling; returns once the first sample is in (or the sampler failed)."""
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"cannot sample row locks: {self._error}") from self._error
        return self

    def stop(self) -> list[tuple[float, int]]:
        """Stop sampling; the samples."""
        self._stop.set()
        self._thread.join(30)
        return self.samples

    def _run(self) -> None:
        try:
            asyncio.run(self._sample())
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc
            self._ready.set()

    async def _sample(self) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pgrowlocks")
            statement = await conn.prepare(_COUNT_LOCKED)
            while not self._stop.is_set():
                count = await statement.fetchval()
                self.samples.append((time.time(), int(count)))
                self._ready.set()
                await asyncio.sleep(self.interval_s)
        finally:
            await conn.close()
