"""The fleet: workers say what they serve (their row, `photoenhance workers`), and each level has
its own queue, consumed only by the workers serving that level."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from db.connection import Database
from db.workers import WorkerRegistry
from photoenhance.settings import Settings
from tests.support.processor import REPO, running_worker


def workers_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.to_env()}
    return subprocess.run(
        [sys.executable, "-m", "photoenhance", "workers", *args], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=120,
    )


@pytest.mark.objectstore
async def test_a_worker_has_a_row_while_it_runs_and_the_cli_lists_it(
    processor_settings: Settings, database: Database, fast_engine
) -> None:
    registry = WorkerRegistry(database, gone_after_s=processor_settings.worker_gone_after_s)
    async with running_worker(processor_settings, fast_engine, worker_id="fleet-w1"):
        [row] = await registry.live()
        assert (row.id, row.levels, row.device) == ("fleet-w1", ("fast",), "cpu")
        listed = await asyncio.to_thread(workers_cli, processor_settings, "--json")
        assert listed.returncode == 0, listed.stderr
        [shown] = json.loads(listed.stdout)
        assert shown["id"] == "fleet-w1" and shown["levels"] == ["fast"]
        table = await asyncio.to_thread(workers_cli, processor_settings)
        assert "fleet-w1" in table.stdout and "fast" in table.stdout
    assert await registry.live() == []  # a clean stop removed the row
    after = await asyncio.to_thread(workers_cli, processor_settings)
    assert after.stdout.strip() == "no live workers"


@pytest.mark.objectstore
async def test_the_heartbeat_refreshes_the_row(
    processor_settings: Settings, database: Database, fast_engine
) -> None:
    settings = processor_settings.replace(worker_beat_s=0.3)
    registry = WorkerRegistry(database, gone_after_s=settings.worker_gone_after_s)
    async with running_worker(settings, fast_engine, worker_id="fleet-beat"):
        [first] = await registry.live()
        await asyncio.sleep(1.0)
        [later] = await registry.live()
    assert later.last_beat_at > first.last_beat_at and later.started_at == first.started_at
