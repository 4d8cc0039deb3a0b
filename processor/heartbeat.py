"""The worker's heartbeat: its row in the ``workers`` table (:mod:`db.workers`), written at
start-up, refreshed every ``WORKER_BEAT_S`` seconds, deleted at a clean stop.

The row is how the rest of the system learns what the fleet serves now: the ingest API's
capabilities and defaults, ``photoenhance workers``, and the waiting images' status. A worker
killed without a stop stops beating and counts as gone after ``WORKER_GONE_AFTER_BEATS`` beats.
A beat that fails (the database is away) is logged and tried again at the next interval: the
worker goes on processing, it only looks gone meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import platform
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path

from db.models import utcnow
from db.workers import WorkerRegistry

__all__ = ["Heartbeat", "device_name"]

log = logging.getLogger(__name__)


def device_name(device: str) -> str:
    """A readable name for ``device``: the GPU's name for ``cuda...``, else the CPU's model."""
    if device.startswith("cuda"):
        try:
            import torch  # only on a GPU worker, which has loaded torch already

            return str(torch.cuda.get_device_name(torch.device(device)))
        except Exception:  # noqa: BLE001 - a name is for people; never stop a worker over it
            return device
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


class Heartbeat:
    """Keeps one worker's row fresh."""

    def __init__(
        self,
        registry: WorkerRegistry,
        worker_id: str,
        *,
        levels: Iterable[str],
        device: str,
        engine_version: str,
        speeds: Callable[[], Mapping[str, float]],
        interval_s: float,
    ) -> None:
        self._registry = registry
        self._worker_id = worker_id
        self._levels = tuple(levels)
        self._device = device
        self._device_name = device_name(device)
        self._engine_version = engine_version
        self._speeds = speeds
        self._interval_s = interval_s
        self._started_at: datetime = utcnow()
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> None:
        """Write the row once (raises if the database is away)."""
        await self._registry.beat(
            self._worker_id,
            levels=self._levels,
            device=self._device,
            device_name=self._device_name,
            engine_version=self._engine_version,
            speeds=self._speeds(),
            started_at=self._started_at,
        )

    async def start(self) -> None:
        """Beat now (so the worker is visible before it consumes), then every interval."""
        try:
            await self.beat()
        except Exception as exc:  # noqa: BLE001 - the database may come back; processing does not need the row
            log.warning("heartbeat failed: %r", exc)
        self._task = asyncio.create_task(self._run(), name="heartbeat")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                log.warning("heartbeat failed: %r", exc)

    async def stop(self) -> None:
        """Stop beating and delete the row: the worker's levels are no longer served by it."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        try:
            await self._registry.remove(self._worker_id)
        except Exception as exc:  # noqa: BLE001 - the row then ages out like a killed worker's
            log.warning("could not remove the worker's row: %r", exc)
