"""The workers table: a beat inserts or refreshes a worker's row, a worker that stops beating
counts as gone, a clean stop removes the row; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from db.connection import Database
from db.workers import WorkerRegistry

both_engines = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def _beat(registry: WorkerRegistry, worker_id: str, levels: list[str], clock: Clock, **kw) -> None:
    await registry.beat(
        worker_id, levels=levels, device=kw.get("device", "cpu"), device_name="Test CPU",
        engine_version=kw.get("engine_version", "1.0.0"), speeds=kw.get("speeds", {}), started_at=clock.now,
    )


@both_engines
async def test_a_beat_registers_and_refreshes_a_worker(database: Database) -> None:
    clock = Clock()
    registry = WorkerRegistry(database, gone_after_s=15, clock=clock)
    await _beat(registry, "w1", ["fast", "balanced"], clock)
    clock.advance(5)
    await _beat(registry, "w1", ["fast", "balanced"], clock, speeds={"fast": 0.25})
    [worker] = await registry.live()
    assert worker.id == "w1" and worker.levels == ("balanced", "fast")
    assert worker.device == "cpu" and worker.device_name == "Test CPU" and worker.engine_version == "1.0.0"
    assert worker.speeds == {"fast": 0.25}
    assert worker.last_beat_at == clock.now and worker.started_at == clock.now - timedelta(seconds=5)
    assert await registry.served_levels() == {"balanced", "fast"}


@both_engines
async def test_a_worker_that_stops_beating_is_gone_and_a_removed_one_too(database: Database) -> None:
    clock = Clock()
    registry = WorkerRegistry(database, gone_after_s=15, clock=clock)
    await _beat(registry, "killed", ["best"], clock)
    await _beat(registry, "clean", ["fast"], clock)
    clock.advance(14)
    await _beat(registry, "clean", ["fast"], clock)
    assert {w.id for w in await registry.live()} == {"killed", "clean"}
    clock.advance(2)  # 16 s since the killed worker's last beat: past 3 missed beats of 5 s
    assert [w.id for w in await registry.live()] == ["clean"]
    assert await registry.served_levels() == {"fast"}
    await registry.remove("clean")
    assert await registry.live() == []


@both_engines
async def test_long_gone_rows_are_swept_by_the_next_beat(database: Database) -> None:
    clock = Clock()
    registry = WorkerRegistry(database, gone_after_s=15, clock=clock)
    await _beat(registry, "old", ["best"], clock)
    clock.advance(151)
    await _beat(registry, "new", ["fast"], clock)
    gone_then_back = WorkerRegistry(database, gone_after_s=10_000, clock=clock)
    assert [w.id for w in await gone_then_back.live()] == ["new"]


@both_engines
async def test_two_engine_versions_on_one_level_are_both_listed(database: Database) -> None:
    clock = Clock()
    registry = WorkerRegistry(database, gone_after_s=15, clock=clock)
    await _beat(registry, "a", ["balanced"], clock, engine_version="1.0.0")
    await _beat(registry, "b", ["balanced"], clock, engine_version="1.1.0")
    assert sorted((w.id, w.engine_version) for w in await registry.live()) == [("a", "1.0.0"), ("b", "1.1.0")]
