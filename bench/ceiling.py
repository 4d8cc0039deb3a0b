"""Benchmark: the worker's own ceiling, everything of the pipeline but the engine.

    .venv/bin/python -m bench.ceiling                     # the matrix: SQLite and PostgreSQL,
                                                          # 1, 2, 4 workers, 1 and 8 batches
    .venv/bin/python -m bench.ceiling --quick             # 120 images, 1 and 4 workers, one batch
    .venv/bin/python -m bench.ceiling --tree /tmp/ctl     # the same, measuring another checkout
    .venv/bin/python -m bench.ceiling --engine fast --workers 1 --batches 1   # the real fast level
    .venv/bin/python -m bench.ceiling --engine-process    # the workers feed one engine process
    .venv/bin/python -m bench.ceiling --sample-locks      # PostgreSQL: the batch lock as the server holds it

The pipeline is the real one (bench/stack.py: its own Ceph RGW, the local RabbitMQ, a fresh
SQLite or PostgreSQL database, ingest and notifier as processes); the workers are
``bench/ceiling_worker.py`` processes running the tree under test (``--tree``, default this
checkout; its PYTHONPATH and working directory), with an engine stand-in that returns each image
unchanged (``--engine passthrough``, the default): what they spend is the worker's own cost.
With ``--engine-process`` the workers hold no engine: they feed one engine process (the same
script, ``--serve-engine``, serving the stand-in), whose CPU per image is reported on its own.

Per configuration (workers x concurrent batches, on each database): fresh workers, a 6-image
warm-up batch, then ``--images`` JPEGs split over the batches, created through the API and
uploaded by presigned PUT 8 at a time; done when every image is final in the database. Reported:

- images/s: images over first upload sent → last image's ``finished_at``;
- CPU ms per image of the processor(s), the engine process (if any), radosgw, ceph-osd, the notifier and RabbitMQ's
  ``beam.smp`` (the machine's shared broker: other users' traffic counts too), from /proc;
- the processor's CPU in the codec (decode + encode, thread CPU time) and outside it;
- write and read transactions per image, counted inside the workers;
- batch lock: each transaction's span from its batch-row lock to its end, p50/p99 ms, the sum per
  image, the part of it spent in COMMIT, and that sum x images/s (the share of the time one
  batch's lock is held, for one batch), all as the workers see it; with ``--sample-locks`` (on
  PostgreSQL) also the share as the server holds it, sampled (bench/row_locks.py), which counts
  the time a worker takes to read the locking statement's reply and leaves out the COMMIT's.

Writes ``ceiling-<UTC time>.json`` and ``.png`` into ``--out``, prints the JSON and a Markdown
table; ``--compare CONTROL.json`` adds a before/after table against an earlier run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # also runs as `python bench/ceiling.py`
    sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from bench.clients import create_batch, upload_all, with_presigned_puts  # noqa: E402
from bench.machine import machine_facts  # noqa: E402
from bench.procstats import ProcSample, sample  # noqa: E402
from bench.row_locks import RowLockSampler, mean_locked  # noqa: E402
from bench.runs import make_images  # noqa: E402
from bench.stack import BenchStack, bench_stack  # noqa: E402
from client.api import Api  # noqa: E402
from db.connection import Database  # noqa: E402
from harness.processor import free_port  # noqa: E402
from photoenhance.settings import Settings  # noqa: E402

WORKER_SCRIPT = Path(__file__).resolve().parent / "ceiling_worker.py"
#: Bound on one configuration's batches; exceeding it fails the run.
WAIT_S = 600
WARM_UP_IMAGES = 6
#: Processes reported, in the table's order.
PROCESSES = ("processor", "engine process", "radosgw", "ceph-osd", "notifier", "broker")


# -- workers -------------------------------------------------------------------------------


class CeilingWorker:
    """One ``bench/ceiling_worker.py`` process running the tree under test."""

    def __init__(self, settings: Settings, tree: Path, engine: str, name: str, workdir: Path,
                 serve_engine: bool = False) -> None:
        self.settings = settings
        self.name = name
        self.stats = workdir / "stats"
        self.stats.mkdir(exist_ok=True)
        self._snapshots = 0
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "ab")
        env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1"}
        serving = ["--serve-engine", settings.engine_socket] if serve_engine else []
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER_SCRIPT), "--worker-id", name, "--stats", str(self.stats), "--engine", engine,
             *serving],
            cwd=tree, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_serving(self, timeout: float = 120) -> None:
        """For the engine process: until its socket exists."""
        deadline = time.monotonic() + timeout
        while not Path(self.settings.engine_socket).exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the engine process {self.name} is not serving:\n{self.log()}")
            time.sleep(0.1)

    def wait_healthy(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.settings.processor_port}/healthz"
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if json.loads(response.read()).get("ok"):
                        return
            except (OSError, urllib.error.HTTPError, ValueError):
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not healthy after {timeout} s:\n{self.log()}")
            time.sleep(0.2)

    async def snapshot(self) -> dict[str, Any]:
        """The worker's counters now (SIGUSR1, then its file)."""
        self._snapshots += 1
        path = self.stats / f"{self.name}-{self._snapshots}.json"
        self.process.send_signal(signal.SIGUSR1)
        for _ in range(300):
            if path.exists():
                return json.loads(path.read_text())
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} wrote no snapshot:\n{self.log()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def broker_pid() -> int | None:
    """RabbitMQ's Erlang VM (``beam.smp``) on this machine, if one is visible."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "beam.smp":
                    return int(entry.name)
            except OSError:
                continue
    return None


# -- one configuration -----------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    database: str
    workers: int
    batches: int
    images: int
    engine: str
    prefetch: int
    #: The workers feed one engine process (``photoenhance engine``) instead of each holding one.
    engine_process: bool = False
    #: Sample the batch rows' locks on the server meanwhile (PostgreSQL; bench.row_locks).
    sample_locks: bool = False


async def _final_count(db: Database, batch_ids: list[str]) -> int:
    marks = ",".join(f"'{b}'" for b in batch_ids)  # ids are the API's own hex names
    async with db.read() as conn:
        return (
            await conn.execute(
                text(f"SELECT count(*) FROM images WHERE batch_id IN ({marks}) AND state IN ('completed','failed')")
            )
        ).scalar_one()


async def _batch_figures(db: Database, batch_ids: list[str]) -> tuple[float, int]:
    """The last ``finished_at`` (epoch s) and how many images failed."""
    marks = ",".join(f"'{b}'" for b in batch_ids)
    async with db.read() as conn:
        rows = (
            await conn.execute(text(f"SELECT finished_at, state FROM images WHERE batch_id IN ({marks})"))
        ).all()
    from db.models import UTCDateTime

    kind = UTCDateTime()
    finished = [kind.process_result_value(r[0] if not isinstance(r[0], str) else _parse(r[0]), None) for r in rows]
    return max(f.timestamp() for f in finished if f is not None), sum(1 for r in rows if r[1] == "failed")


def _parse(value: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(value)


async def _run_batches(
    stack: BenchStack, session: aiohttp.ClientSession, db: Database, files: dict[str, bytes], batches: int,
    concurrency: int = 8,
) -> tuple[list[str], float, float]:
    """Create ``batches`` batches sharing ``files``, upload, wait until every image is final.
    Returns the batch ids, when the first upload was sent and when the last image was seen final."""
    api = Api(session, stack.ingest_url)
    names = list(files)
    parts = [{n: files[n] for n in names[i::batches]} for i in range(batches)]
    created = [with_presigned_puts(await create_batch(api, part), stack.settings) for part in parts]
    ids = [c.batch_id for c in created]
    started = time.time()
    per_batch = max(1, concurrency // batches)
    await asyncio.gather(*(upload_all(session, c, p, concurrency=per_batch) for c, p in zip(created, parts)))
    deadline = time.monotonic() + WAIT_S
    while (done := await _final_count(db, ids)) < len(files):
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {len(files)} images final after {WAIT_S} s\n{stack.logs()}")
        await asyncio.sleep(0.2)
    return ids, started, time.time()


def _cpu(before: ProcSample | None, after: ProcSample | None) -> float | None:
    return None if before is None or after is None else after.cpu_s - before.cpu_s


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def run_config(
    stack: BenchStack, session: aiohttp.ClientSession, db: Database, config: Config, tree: Path, seed: int
) -> dict[str, Any]:
    """Fresh workers, a warm-up batch, the measured batches; every figure of one configuration."""
    settings = stack.settings.replace(prefetch=config.prefetch)
    engine_process = None
    if config.engine_process:
        settings = settings.replace(engine_socket=str(stack.workdir / f"engine-{seed}.sock"))
        engine_process = CeilingWorker(settings, tree, config.engine, f"e{seed}", stack.workdir, serve_engine=True)
        engine_process.wait_serving()
    workers = [
        CeilingWorker(settings.replace(processor_port=free_port()), tree, config.engine, f"w{seed}-{i + 1}", stack.workdir)
        for i in range(config.workers)
    ]
    try:
        for worker in workers:
            await asyncio.to_thread(worker.wait_healthy)
        await _run_batches(stack, session, db, make_images(WARM_UP_IMAGES, 256, seed=900_000 + seed), 1, 4)
        files = make_images(config.images, 256, seed=seed)
        broker = broker_pid()
        pids = {**{w.name: w.process.pid for w in workers}, **stack.pids(), **({"broker": broker} if broker else {})}
        if engine_process is not None:
            pids["engine process"] = engine_process.process.pid
        first = [await w.snapshot() for w in workers]
        before = {name: sample(pid) for name, pid in pids.items()}
        sampler = None
        if config.sample_locks and config.database == "postgresql":
            sampler = await asyncio.to_thread(RowLockSampler(stack.settings.database_url).start)
        try:
            ids, started, seen_done = await _run_batches(stack, session, db, files, config.batches)
        finally:
            lock_samples = [] if sampler is None else await asyncio.to_thread(sampler.stop)
        after = {name: sample(pid) for name, pid in pids.items()}
        last = [await w.snapshot() for w in workers]
        finished_at, failed = await _batch_figures(db, ids)
    finally:
        for worker in workers:
            await asyncio.to_thread(worker.stop)
        if engine_process is not None:
            await asyncio.to_thread(engine_process.stop)
    n = config.images
    span_s = max(finished_at - started, 1e-6)
    cpu = {name: _cpu(before.get(name), after.get(name)) for name in pids}
    processor_cpu = sum(cpu[w.name] or 0.0 for w in workers)
    holds = [h for a, b in zip(first, last) for h in b["lock_holds_s"][len(a["lock_holds_s"]):]]
    # Workers of trees before 2026-12-04 did not split off the commit: None there.
    commits = [h for a, b in zip(first, last) for h in b.get("lock_commits_s", [])[len(a.get("lock_commits_s", [])):]]
    codec = sum(b["codec_cpu_s"] - a["codec_cpu_s"] for a, b in zip(first, last))
    writes = sum(b["writes_committed"] - a["writes_committed"] for a, b in zip(first, last))
    failed_writes = sum(b["writes_failed"] - a["writes_failed"] for a, b in zip(first, last))
    reads = sum(b["reads"] - a["reads"] for a, b in zip(first, last))
    # Instruments before 2026-12-05 did not count statements: None there.
    statements = sum(b["statements"] - a["statements"] for a, b in zip(first, last)) if all(
        "statements" in b for b in first + last) else None
    images_per_s = n / span_s
    lock_per_image_s = sum(holds) / n
    per_image_ms = {"processor": processor_cpu / n * 1000}
    for name in PROCESSES[1:]:
        per_image_ms[name] = None if cpu.get(name) is None else cpu[name] / n * 1000
    return {
        "database": config.database,
        "workers": config.workers,
        "batches": config.batches,
        "images": n,
        "failed": failed,
        "engine": config.engine,
        "engine_process": config.engine_process,
        "prefetch": config.prefetch,
        "images_per_s": round(images_per_s, 2),
        "span_s": round(span_s, 2),
        "cpu_ms_per_image": {k: None if v is None else round(v, 2) for k, v in per_image_ms.items()},
        "processor_codec_cpu_ms_per_image": round(codec / n * 1000, 2),
        "processor_own_cpu_ms_per_image": round((processor_cpu - codec) / n * 1000, 2),
        "processor_own_over_radosgw": (
            round((processor_cpu - codec) / cpu["radosgw"], 2) if cpu.get("radosgw") else None
        ),
        "write_transactions_per_image": round(writes / n, 2),
        "failed_write_transactions": failed_writes,
        "read_transactions_per_image": round(reads / n, 2),
        "statements_per_image": None if statements is None else round(statements / n, 2),
        "lock_hold_ms": {
            "p50": round(_pct(holds, 0.5) * 1000, 2),
            "p99": round(_pct(holds, 0.99) * 1000, 2),
            "per_image": round(lock_per_image_s * 1000, 2),
            "transactions": len(holds),
            # The part of the holds spent in COMMIT (entered to returned); the rest is the
            # statements under the lock and the worker's own time between them.
            "commit_p50": round(_pct(commits, 0.5) * 1000, 2) if commits else None,
            "commit_per_image": round(sum(commits) / n * 1000, 2) if commits else None,
        },
        "lock_per_image_x_images_per_s": round(lock_per_image_s * images_per_s, 3),
        # The same share as the server holds it (pgrowlocks, sampled): None unless sampled.
        "server_locked_share": _rounded(mean_locked(lock_samples, started, finished_at), 3),
        "server_lock_samples": len([at for at, _ in lock_samples if started <= at <= finished_at]),
    }


# -- the matrix ------------------------------------------------------------------------------


def _ints(text_value: str) -> list[int]:
    return [int(p) for p in text_value.split(",") if p.strip()]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    facts = machine_facts()
    tree = args.tree.resolve()
    tree_commit = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    results = []
    seed = 0
    for database in args.database.split(","):
        async with bench_stack(None, database) as stack, aiohttp.ClientSession() as session:
            db = Database(stack.settings.database_url)
            try:
                for batches in _ints(args.batches):
                    for workers in _ints(args.workers):
                        seed += 1
                        config = Config(database, workers, batches, args.images, args.engine, args.prefetch,
                                        args.engine_process, args.sample_locks)
                        print(f"{database}: {workers} worker(s), {batches} batch(es), {args.images} images"
                              f"{', one engine process' if args.engine_process else ''}", file=sys.stderr)
                        figures = await run_config(stack, session, db, config, tree, seed)
                        print("   ", json.dumps(figures), file=sys.stderr)
                        results.append(figures)
            finally:
                await db.dispose()
    return {
        "benchmark": "ceiling",
        "command": " ".join([sys.executable, "-m", "bench.ceiling", *sys.argv[1:]]),
        "tree": str(tree),
        "tree_commit": tree_commit,
        "machine": facts,
        "config": {
            "images": args.images, "engine": args.engine, "engine_process": args.engine_process,
            "prefetch": args.prefetch, "size_px": 256,
            "options": {"quality": "fast", "upscale": 2}, "upload_concurrency": 8,
        },
        "runs": results,
    }


# -- reporting -------------------------------------------------------------------------------


def _f(value: Any) -> str:
    return "–" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def table(result: dict[str, Any]) -> str:
    """One row per configuration."""
    head = (
        "| db | workers | batches | images/s | processor | own (no codec) | codec | engine process | radosgw | ceph-osd "
        "| notifier | broker | own/radosgw | writes/img | statements/img | reads/img "
        "| lock p50 ms | lock p99 ms | lock ms/img | of it COMMIT | lock×img/s | locked (server) |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in result["runs"]:
        c = r["cpu_ms_per_image"]
        lines.append(
            f"| {r['database']} | {r['workers']} | {r['batches']} | {_f(r['images_per_s'])} | {_f(c['processor'])} "
            f"| {_f(r['processor_own_cpu_ms_per_image'])} | {_f(r['processor_codec_cpu_ms_per_image'])} "
            f"| {_f(c.get('engine process'))} | {_f(c['radosgw'])} | {_f(c['ceph-osd'])} | {_f(c['notifier'])} "
            f"| {_f(c['broker'])} "
            f"| {_f(r['processor_own_over_radosgw'])} | {_f(r['write_transactions_per_image'])} "
            f"| {_f(r.get('statements_per_image'))} "
            f"| {_f(r['read_transactions_per_image'])} | {_f(r['lock_hold_ms']['p50'])} "
            f"| {_f(r['lock_hold_ms']['p99'])} | {_f(r['lock_hold_ms']['per_image'])} "
            f"| {_f(r['lock_hold_ms'].get('commit_per_image'))} | {_f(r['lock_per_image_x_images_per_s'])} "
            f"| {_f(r.get('server_locked_share'))} |"
        )
    return "\n".join(lines)


def comparison(control: dict[str, Any], change: dict[str, Any]) -> str:
    """Before/after per configuration found in both runs."""
    key = lambda r: (r["database"], r["workers"], r["batches"], r["engine"])  # noqa: E731
    # A control without an engine process stands beside a change with one: same workers, same images.
    old = {key(r): r for r in control["runs"]}
    lines = [
        "| db | workers | batches | images/s before → after | processor CPU ms/img before → after "
        "| own (no codec) before → after | radosgw ms/img | writes/img before → after "
        "| statements/img before → after | lock ms/img before → after | lock×img/s before → after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in change["runs"]:
        o = old.get(key(r))
        if o is None:
            continue
        lines.append(
            f"| {r['database']} | {r['workers']} | {r['batches']} | {_f(o['images_per_s'])} → {_f(r['images_per_s'])} "
            f"| {_f(o['cpu_ms_per_image']['processor'])} → {_f(r['cpu_ms_per_image']['processor'])} "
            f"| {_f(o['processor_own_cpu_ms_per_image'])} → {_f(r['processor_own_cpu_ms_per_image'])} "
            f"| {_f(o['cpu_ms_per_image']['radosgw'])} → {_f(r['cpu_ms_per_image']['radosgw'])} "
            f"| {_f(o['write_transactions_per_image'])} → {_f(r['write_transactions_per_image'])} "
            f"| {_f(o.get('statements_per_image'))} → {_f(r.get('statements_per_image'))} "
            f"| {_f(o['lock_hold_ms']['per_image'])} → {_f(r['lock_hold_ms']['per_image'])} "
            f"| {_f(o['lock_per_image_x_images_per_s'])} → {_f(r['lock_per_image_x_images_per_s'])} |"
        )
    return "\n".join(lines)


def write_plot(path: Path, result: dict[str, Any], control: dict[str, Any] | None) -> None:
    """CPU ms per image by process (stacked) and images/s, per configuration; the control beside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [("", r) for r in result["runs"]]
    if control is not None:
        runs = [("before ", r) for r in control["runs"]] + [("after ", r) for r in result["runs"]]
    labels = [f"{tag}{r['database'][:2]} {r['workers']}w{'+e' if r.get('engine_process') else ''} {r['batches']}b"
              for tag, r in runs]
    parts = {
        "processor (own)": [r["processor_own_cpu_ms_per_image"] for _, r in runs],
        "processor (codec)": [r["processor_codec_cpu_ms_per_image"] for _, r in runs],
        **{name: [r["cpu_ms_per_image"].get(name) or 0 for _, r in runs] for name in PROCESSES[1:]},
    }
    fig, (left, right, locks) = plt.subplots(1, 3, figsize=(18, 5 + len(runs) * 0.12),
                                             gridspec_kw={"width_ratios": [2, 1, 1]})
    bottom = [0.0] * len(runs)
    for name, values in parts.items():
        left.barh(labels, values, left=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values)]
    left.set_xlabel("CPU ms per image")
    left.invert_yaxis()
    left.legend(fontsize=8)
    right.barh(labels, [r["images_per_s"] for _, r in runs], color="tab:green")
    right.set_xlabel("images/s (engine stand-in)" if result["config"]["engine"] == "passthrough" else "images/s")
    right.invert_yaxis()
    # The batch lock's share of the time: as the workers time it, and as the server holds it.
    rows = list(range(len(runs)))
    locks.barh([y - 0.2 for y in rows], [r["lock_per_image_x_images_per_s"] for _, r in runs], height=0.4,
               label="workers' timing", color="tab:purple")
    locks.barh([y + 0.2 for y in rows], [r.get("server_locked_share") or 0 for _, r in runs], height=0.4,
               label="server (sampled; 0: not sampled)", color="tab:orange")
    locks.set_yticks(rows, labels)
    locks.axvline(0.3, color="grey", linestyle="--", linewidth=1)
    locks.set_xlabel("batch lock held, share of the time")
    locks.invert_yaxis()
    locks.legend(fontsize=8)
    fig.suptitle(f"PhotoEnhance worker ceiling, {result['config']['images']} images per run, "
                 f"{result['machine']['cpu_cores']} cores, {result['machine']['date_utc']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="images per configuration")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts")
    parser.add_argument("--batches", default="1,8", help="concurrent batch counts")
    parser.add_argument("--database", default="sqlite,postgresql", help="sqlite, postgresql, or both comma-separated")
    parser.add_argument("--sample-locks", action="store_true",
                        help="PostgreSQL: sample the batch rows' locks on the server too (bench/row_locks.py)")
    parser.add_argument("--engine-process", action="store_true",
                        help="the workers feed one engine process (photoenhance engine) instead of each holding one")
    parser.add_argument("--engine", choices=["passthrough", "fast"], default="passthrough",
                        help="the engine stand-in (default) or the real fast level")
    parser.add_argument("--prefetch", type=int, default=4, help="PREFETCH of each worker")
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout whose processor is measured")
    parser.add_argument("--compare", type=Path, help="an earlier ceiling JSON (the control) to set beside")
    parser.add_argument("--quick", action="store_true", help="120 images, 1 and 4 workers, one batch")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="folder for the JSON and PNG")
    args = parser.parse_args()
    if args.quick:
        args.images, args.workers, args.batches = 120, "1,4", "1"
    result = asyncio.run(run(args))
    control = json.loads(args.compare.read_text()) if args.compare else None
    stamp = result["machine"]["date_utc"].replace("-", "").replace(":", "")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = args.out / f"ceiling-{stamp}.json", args.out / f"ceiling-{stamp}.png"
    text_out = json.dumps(result, indent=2)
    json_path.write_text(text_out + "\n")
    write_plot(png_path, result, control)
    print(text_out)
    print()
    print(table(result))
    if control is not None:
        print()
        print(comparison(control, result))
    print(f"\nwrote {json_path} and {png_path}")
    return 0 if all(r["failed"] == 0 for r in result["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
