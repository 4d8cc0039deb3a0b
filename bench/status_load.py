"""``/healthz`` of ingest while clients poll the status of a large completed batch.

Issue 17: 16 clients polling ``GET /api/v1/batches/{id}`` of a completed 1,000-image batch pushed
ingest's ``/healthz`` from 5 ms to 369 ms median, because every status answer signed 1,000 result
links on the event loop. This measures the same thing for one or more source trees (the code of
main as the control, this tree after), each run as a real ``photoenhance ingest`` process over a
SQLite database seeded with one completed batch:

1. idle: ``/healthz`` probed every ``--probe-interval-ms`` for a few seconds (open loop: a probe
   never waits for the one before it);
2. loaded: ``--clients`` pollers (in a separate process, so their JSON parsing does not slow the
   prober) read the batch's whole status over and over, following ``next`` where the API pages,
   while the prober keeps probing ``/healthz``.

Figures per tree: ``/healthz`` median, p95 and max (idle and loaded), status polls answered and
their median, and ingest's CPU seconds per whole-batch status read (the least noisy figure on a
shared machine). Signing is local computation, so no object store is needed; nothing is
published, so no broker either.

    .venv/bin/python -m bench.status_load --tree control=/tmp/ctl --tree current=. \
        --json docs/bench/status_load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from bench.machine import load_average, machine_facts
from bench.procstats import sample
from db.connection import Database
from db.migrate import upgrade
from db.records import ImageVersion
from db.repository import DeclaredFile, Repository
from photoenhance.contracts.tokens import new_batch_token

__all__ = ["main"]

#: Batch id of the seeded batch (a valid ULID).
BATCH_ID = "01JBENCHSTATVS10AD000000000"[:26]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def seed(url: str, images: int) -> str:
    """A completed batch of ``images`` declared, uploaded and enhanced files; returns its token."""
    db = Database(url)
    await upgrade(db)
    repo = Repository(db)
    token, token_hash = new_batch_token()
    names = [f"photo-{i:05d}.jpg" for i in range(images)]
    await repo.create_batch(
        BATCH_ID,
        input_bucket="photoenhance-input",
        options={"quality": "fast"},
        source="api",
        expected_count=images,
        token_hash=token_hash,
        files=[DeclaredFile(n, f"Holiday {n}", 123_456, "image/jpeg") for n in names],
    )
    when = datetime(2026, 1, 1, tzinfo=UTC)
    for i, name in enumerate(names):
        reg = await repo.register_image(
            ImageVersion(
                bucket="photoenhance-input", batch_id=BATCH_ID, key=f"{BATCH_ID}/{name}", name=name,
                etag=f"etag{i}", size=123_456, uploaded_at=when + timedelta(seconds=i),
            )
        )
        claimed = await repo.claim_image(reg.image.id, "bench", 60)
        assert claimed is not None
        await repo.complete_image(reg.image.id, "bench", output_key=f"{BATCH_ID}/{name}")
    batch = await repo.get_batch(BATCH_ID)
    assert batch is not None and batch.state.value == "completed", batch
    await db.dispose()
    return token


def poll_forever(base: str, token: str, clients: int, seconds: float, out: Any) -> None:
    """Child process: ``clients`` pollers reading the whole status for ``seconds``."""
    out.send(asyncio.run(_poll(base, token, clients, seconds)))


async def _poll(base: str, token: str, clients: int, seconds: float) -> dict[str, Any]:
    durations: list[float] = []
    images_read: list[int] = []
    errors = 0
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one_client() -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                started = time.perf_counter()
                count, cursor = 0, None
                while True:
                    params = {"limit": "500"} if cursor is None else {"limit": "500", "after": cursor}
                    async with http.get(f"{base}/api/v1/batches/{BATCH_ID}", headers=headers, params=params) as r:
                        if r.status != 200:
                            errors += 1
                            break
                        doc = json.loads(await r.read())
                    count += len(doc["images"])
                    cursor = doc.get("next")  # absent on the control: one answer holds everything
                    if not cursor:
                        break
                durations.append(time.perf_counter() - started)
                images_read.append(count)

        await asyncio.gather(*(one_client() for _ in range(clients)))
    return {"durations": durations, "images_read": images_read, "errors": errors}


async def probe(base: str, seconds: float, interval_s: float) -> list[float]:
    """``/healthz`` latencies of probes sent every ``interval_s`` for ``seconds``.

    Open loop: each probe is sent on schedule whether or not the previous one has been answered,
    so a loop blocked for a second shows as twenty slow probes, not one (a probe that waited
    for its predecessor would under-count exactly the stalls this measures).
    """
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one() -> float:
            started = time.perf_counter()
            async with http.get(f"{base}/healthz") as r:
                await r.read()
                assert r.status == 200
            return time.perf_counter() - started

        tasks = []
        deadline = time.monotonic() + seconds
        next_at = time.monotonic()
        while time.monotonic() < deadline:
            tasks.append(asyncio.create_task(one()))
            next_at += interval_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        return list(await asyncio.gather(*tasks))


async def git_commit(tree: Path) -> str:
    """The short commit id ``tree`` has checked out."""
    git = await asyncio.create_subprocess_exec(
        "git", "rev-parse", "--short", "HEAD", cwd=tree, stdout=subprocess.PIPE
    )
    out, _ = await git.communicate()
    return out.decode().strip()


async def wait_until_up(base: str, process: asyncio.subprocess.Process) -> None:
    """Until ``/healthz`` answers 200 (ingest is starting); fails if the process exits."""
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            if process.returncode is not None:
                raise RuntimeError(f"ingest exited with {process.returncode} before answering")
            try:
                async with http.get(f"{base}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError("ingest did not answer /healthz within 60 s")


def summary_ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def measure_tree(label: str, tree: Path, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    url = f"sqlite+aiosqlite:///{workdir / f'{label}.db'}"
    token = await seed(url, args.images)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "DATABASE_URL": url,
        "S3_ENDPOINT": "http://127.0.0.1:9",  # signing is local; nothing is fetched
        "NOTIFIER_PUBLIC_URL": "http://127.0.0.1:8081",
    }
    log = (workdir / f"{label}.log").open("w")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "photoenhance", "ingest", "--host", "127.0.0.1", "--port", str(port),
        cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_until_up(base, process)
        idle = await probe(base, args.idle_seconds, args.probe_interval_ms / 1000)
        receive, send = multiprocessing.Pipe(duplex=False)
        pollers = multiprocessing.get_context("spawn").Process(
            target=poll_forever, args=(base, token, args.clients, args.seconds, send)
        )
        before = sample(process.pid)
        load_before = load_average()
        pollers.start()
        await asyncio.sleep(1.0)  # let every poller get going
        loaded = await probe(base, args.seconds - 2.0, args.probe_interval_ms / 1000)
        polled = await asyncio.to_thread(receive.recv)
        await asyncio.to_thread(pollers.join)
        after = sample(process.pid)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
        log.close()
    assert before is not None and after is not None
    reads = len(polled["durations"])
    assert all(n == args.images for n in polled["images_read"]), "a poll did not read every image"
    return {
        "tree": str(tree),
        "commit": await git_commit(tree),
        "healthz_idle": summary_ms(idle),
        "healthz_loaded": summary_ms(loaded),
        "status_reads": reads,
        "status_read": summary_ms(polled["durations"]) if reads else None,
        "status_errors": polled["errors"],
        "ingest_cpu_s": round(after.cpu_s - before.cpu_s, 2),
        "ingest_cpu_ms_per_status_read": round((after.cpu_s - before.cpu_s) * 1000 / max(1, reads), 1),
        "load_average_before": load_before,
    }


def table(results: dict[str, Any]) -> str:
    rows = [
        "| tree | commit | /healthz idle median | /healthz loaded median | p95 | max | whole-status reads | read median "
        "| ingest CPU ms / read |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in results["trees"].items():
        rows.append(
            f"| {label} | {r['commit']} | {r['healthz_idle']['median_ms']} ms | {r['healthz_loaded']['median_ms']} ms "
            f"| {r['healthz_loaded']['p95_ms']} ms | {r['healthz_loaded']['max_ms']} ms | {r['status_reads']} "
            f"| {r['status_read']['median_ms'] if r['status_read'] else '-'} ms | {r['ingest_cpu_ms_per_status_read']} |"
        )
    return "\n".join(rows)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "benchmark": "status_load",
        "images": args.images,
        "clients": args.clients,
        "seconds": args.seconds,
        "probe_interval_ms": args.probe_interval_ms,
        "machine": machine_facts(),
        "trees": {},
    }
    with tempfile.TemporaryDirectory(prefix="status-load-") as tmp:
        for spec in args.tree:
            label, _, path = spec.partition("=")
            results["trees"][label] = await measure_tree(label, Path(path).resolve(), args, Path(tmp))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", required=True, help="LABEL=PATH of a source tree (repeat)")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the loaded phase")
    parser.add_argument("--idle-seconds", type=float, default=3.0)
    parser.add_argument("--probe-interval-ms", type=float, default=50.0)
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    text = json.dumps(results, indent=2)
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
