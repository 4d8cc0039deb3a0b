"""A worker's peak memory under the uploads issue 17 found: before and after memory was bounded.

Runs the real pipeline (bench/stack.py: a throw-away Ceph RGW, the local RabbitMQ, an SQLite
database) and, per scenario, one fresh ``photoenhance processor`` process at the ``fast`` level.
Each scenario first processes one small photo (so first-use allocations are in the baseline),
then reads the worker's peak resident memory (``VmHWM``) before and after its uploads:

- ``attack``: the 162 KB PNG that honestly holds 7071 x 7071 black pixels, with ``upscale: 4``
  (a 28284 x 28284 result; ~8 GB of peak memory on the code before the bound);
- ``four-budget``: four 1500 x 1500 PNGs at upscale 4 (6000 x 6000 results, estimated at 412 MiB
  each) uploaded at once to a worker with ``WORKER_MEMORY_BUDGET_MB=--budget-mb`` (500): they
  are admitted one at a time;
- ``four-default``: the same four with the default budget (60 % of this host's memory): they run
  together, as every image did before.

A watchdog kills the worker past ``--kill-above-mb`` of resident memory (the scenario then says
``killed``); the control run against the old code needs room for ~8 GB.

    .venv/bin/python bench/memory_bounds.py                       # after (this tree)
    git worktree add /tmp/ctl 2862be8 && cp bench/memory_bounds.py /tmp/ctl/bench/ && \\
      (cd /tmp/ctl && PYTHONPATH=$PWD ../path/to/.venv/bin/python bench/memory_bounds.py --label before)

Prints one JSON document, then a table. The machine is shared and noisy: wall times are indicative,
peak memory is not affected by the noise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import machine_facts  # noqa: E402
from bench.stack import BenchStack, bench_stack  # noqa: E402
from db.connection import Database  # noqa: E402
from db.repository import Repository  # noqa: E402
from harness.bombs import attack_png, large_png  # noqa: E402
from harness.processor import WorkerProcess, free_port, image_bytes, memory_kib, put  # noqa: E402
from photoenhance.s3 import minio_client  # noqa: E402
from photoenhance.settings import Settings  # noqa: E402

MIB = 1 << 20

#: Bound on waiting for one scenario's images (the control run's 28284 x 28284 JPEG takes minutes).
WAIT_S = 900








class Watchdog:
    """Kills ``pid`` once its resident memory passes ``limit`` bytes."""

    def __init__(self, pid: int, limit: int) -> None:
        self.pid, self.limit, self.killed_at = pid, limit, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            try:
                rss = memory_kib(self.pid)["VmRSS"] * 1024
            except (OSError, KeyError):
                return
            if rss > self.limit:
                self.killed_at = rss
                os.kill(self.pid, signal.SIGKILL)
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


async def final(repository: Repository, batch_id: str, names: list[str], watchdog: Watchdog | None) -> dict[str, Any]:
    """Wait until every named image of the batch is final; their records by name."""
    deadline = time.monotonic() + WAIT_S
    while True:
        snapshot = await repository.batch_snapshot(batch_id)
        done = {i.name: i for i in (snapshot.images if snapshot else []) if i.name in names and i.state.is_final}
        if len(done) == len(names):
            return done
        if watchdog is not None and watchdog.killed_at:
            raise RuntimeError(f"killed at {watchdog.killed_at / MIB:.0f} MiB")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not final after {WAIT_S} s: {sorted(set(names) - set(done))}")
        await asyncio.sleep(0.2)


async def scenario(stack: BenchStack, repository: Repository, name: str, uploads: dict[str, bytes],
                   upscale: int, budget_mb: int | None, kill_above: int) -> dict[str, Any]:
    settings = stack.settings.replace(prefetch=4, processor_port=free_port())
    if budget_mb is not None and "worker_memory_budget_mb" in Settings.__dataclass_fields__:
        settings = settings.replace(worker_memory_budget_mb=budget_mb)
    worker = WorkerProcess(settings, stack.workdir / f"{name}.log", name)
    client = minio_client(settings)
    batch_id = f"mem-{name}"
    try:
        await asyncio.to_thread(worker.wait_healthy, 300)
        await asyncio.to_thread(put, client, settings.s3_input_bucket, f"{batch_id}/warm.jpg", image_bytes(seed=1),
                                {"photoenhance-quality": "fast"})
        await final(repository, batch_id, ["warm.jpg"], None)
        baseline = memory_kib(worker.process.pid)["VmHWM"] * 1024
        watchdog = Watchdog(worker.process.pid, kill_above)
        meta = {"photoenhance-quality": "fast", "photoenhance-upscale": str(upscale)}
        started = time.monotonic()
        await asyncio.gather(*(
            asyncio.to_thread(put, client, settings.s3_input_bucket, f"{batch_id}/{key}", data, meta)
            for key, data in uploads.items()
        ))
        try:
            images = await final(repository, batch_id, list(uploads), watchdog)
            outcome = {k: (i.state.value if i.code is None else i.code) for k, i in images.items()}
            reasons = {k: i.reason for k, i in images.items() if i.reason}
            peak = memory_kib(worker.process.pid)["VmHWM"] * 1024
        except RuntimeError as exc:
            outcome, reasons, peak = {"*": "killed"}, {"*": str(exc)}, watchdog.killed_at
        finally:
            watchdog.stop()
        return {
            "scenario": name,
            "uploads": len(uploads),
            "upload_bytes": sum(len(d) for d in uploads.values()),
            "upscale": upscale,
            "budget_mb": budget_mb,
            "baseline_mib": round(baseline / MIB, 1),
            "peak_mib": round(peak / MIB, 1),
            "growth_mib": round((peak - baseline) / MIB, 1),
            "wall_s": round(time.monotonic() - started, 2),
            "outcome": outcome,
            "reasons": reasons,
        }
    finally:
        worker.close()


def table(result: dict[str, Any]) -> str:
    lines = [
        f"label: {result['label']}",
        "| scenario | uploads | budget MiB | baseline MiB | peak MiB | growth MiB | wall s | outcome |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["scenarios"]:
        outcome = ", ".join(sorted(set(row["outcome"].values())))
        lines.append(
            f"| {row['scenario']} | {row['uploads']} ({row['upload_bytes'] // 1000} KB) | {row['budget_mb'] or 'default'} "
            f"| {row['baseline_mib']} | {row['peak_mib']} | {row['growth_mib']} | {row['wall_s']} | {outcome} |"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="after")
    parser.add_argument("--budget-mb", type=int, default=500)
    parser.add_argument("--kill-above-mb", type=int, default=12_000)
    parser.add_argument("--scenario", action="append", choices=["attack", "four-budget", "four-default"])
    args = parser.parse_args()
    chosen = args.scenario or ["attack", "four-budget", "four-default"]
    large = {f"large-{n}.png": large_png(n) for n in range(4)}
    plans = {
        "attack": ({"attack.png": attack_png()}, 4, None),
        "four-budget": (large, 4, args.budget_mb),
        "four-default": (large, 4, None),
    }
    rows = []
    async with bench_stack() as stack:
        database = Database(stack.settings.database_url)
        try:
            repository = Repository(database)
            for name in chosen:
                uploads, upscale, budget = plans[name]
                rows.append(await scenario(stack, repository, name, uploads, upscale, budget, args.kill_above_mb * MIB))
        finally:
            await database.dispose()
    result = {"label": args.label, "machine": machine_facts(), "scenarios": rows}
    print(json.dumps(result, indent=2))
    print()
    print(table(result))


if __name__ == "__main__":
    asyncio.run(main())
