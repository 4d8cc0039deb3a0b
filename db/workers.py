"""The workers table: who is processing, what each serves, and whether it is still alive.

A worker writes its own row (:meth:`WorkerRegistry.beat`) every ``WORKER_BEAT_S`` seconds and
deletes it when it stops cleanly. A row whose last beat is older than ``WORKER_BEAT_S`` times
``WORKER_GONE_AFTER_BEATS`` belongs to a worker that is gone (killed, cut off): readers ignore
it, and the next beat of any worker sweeps it away. Only a worker writes its own row, so the
upsert below needs no lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update

from db.connection import Database
from db.models import WorkerRow, utcnow

__all__ = ["WorkerInfo", "WorkerRegistry"]


@dataclass(frozen=True)
class WorkerInfo:
    """One worker as its row says."""

    id: str
    levels: tuple[str, ...]
    device: str
    device_name: str
    engine_version: str
    #: Measured seconds per input megapixel per level.
    speeds: dict[str, float]
    started_at: datetime
    last_beat_at: datetime

    def to_dict(self) -> dict[str, object]:
        """JSON-ready values."""
        return {
            "id": self.id,
            "levels": list(self.levels),
            "device": self.device,
            "device_name": self.device_name,
            "engine_version": self.engine_version,
            "seconds_per_megapixel": dict(self.speeds),
            "started_at": self.started_at.isoformat(),
            "last_beat_at": self.last_beat_at.isoformat(),
        }


class WorkerRegistry:
    """Reads and writes the ``workers`` table."""

    def __init__(self, db: Database, *, gone_after_s: float, clock: Callable[[], datetime] = utcnow) -> None:
        self._db = db
        self.gone_after_s = gone_after_s
        self._now = clock

    async def beat(
        self,
        worker_id: str,
        *,
        levels: Iterable[str],
        device: str,
        device_name: str,
        engine_version: str,
        speeds: Mapping[str, float],
        started_at: datetime,
    ) -> None:
        """Insert or refresh this worker's row, and sweep rows of workers long gone."""
        now = self._now()
        values = {
            "levels": sorted(levels),
            "device": device,
            "device_name": device_name[:255],
            "engine_version": engine_version,
            "speeds": {k: round(float(v), 6) for k, v in speeds.items()},
            "last_beat_at": now,
        }
        async with self._db.write() as conn:
            changed = await conn.execute(update(WorkerRow).where(WorkerRow.id == worker_id).values(**values))
            if changed.rowcount == 0:
                await conn.execute(insert(WorkerRow).values(id=worker_id, started_at=started_at, **values))
            # Ten times the liveness window: long enough that a reader never races the sweep.
            await conn.execute(
                delete(WorkerRow).where(WorkerRow.last_beat_at < now - timedelta(seconds=10 * self.gone_after_s))
            )

    async def remove(self, worker_id: str) -> None:
        """Delete this worker's row (clean shutdown)."""
        async with self._db.write() as conn:
            await conn.execute(delete(WorkerRow).where(WorkerRow.id == worker_id))

    async def live(self) -> list[WorkerInfo]:
        """Workers whose last beat is recent enough, oldest first."""
        since = self._now() - timedelta(seconds=self.gone_after_s)
        async with self._db.read() as conn:
            rows = (
                await conn.execute(
                    select(WorkerRow).where(WorkerRow.last_beat_at >= since).order_by(WorkerRow.started_at, WorkerRow.id)
                )
            ).all()
        return [_info(row) for row in rows]

    async def served_levels(self, declared: Iterable[str] = ()) -> set[str]:
        """The levels at least one live worker serves, plus ``declared`` (``FLEET_LEVELS``)."""
        return {level for worker in await self.live() for level in worker.levels} | set(declared)


def _info(row: Any) -> WorkerInfo:
    return WorkerInfo(
        id=row.id,
        levels=tuple(row.levels),
        device=row.device,
        device_name=row.device_name,
        engine_version=row.engine_version,
        speeds={k: float(v) for k, v in (row.speeds or {}).items()},
        started_at=row.started_at,
        last_beat_at=row.last_beat_at,
    )
