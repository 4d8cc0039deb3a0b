"""Benchmark: the worker's database path alone, several checkouts side by side.

    .venv/bin/python -m bench.db_path                                   # this checkout
    .venv/bin/python -m bench.db_path --trees /tmp/control,.            # a control beside it
    .venv/bin/python -m bench.db_path --processes 1,4 --rounds 5 --images 400

What one image costs a worker in the database and nothing else: ``bench/db_path_worker.py``
processes, run with each tree's code (``--trees``: its PYTHONPATH and working directory), start and
complete new images of one batch with ``--lanes`` images in flight each (a worker's prefetch
window), on a fresh SQLite file or PostgreSQL database per run. No store, broker, codec or engine:
the figures move with the database code only, which the whole-pipeline ceiling (bench/ceiling.py)
cannot show on a machine whose two cores the store and the broker share.

Rounds alternate the trees (control, change, control, change, ...) so that the machine's drift
falls on both. Reported per tree, database and process count, as the median over the rounds
(min-max beside): CPU ms per image of the worker processes (from getrusage, user + system),
images/s, write transactions and statements per image; and each tree's CPU per image and images/s
over the first tree's (the control) in the same round, as the median of those ratios. Writes ``db-path-<UTC time>.json`` and
``.png`` into ``--out``, prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # also runs as `python bench/db_path.py`
    sys.path.insert(0, str(ROOT))

from bench.machine import machine_facts  # noqa: E402
from bench.stack import POSTGRES_ADMIN_URL  # noqa: E402
from harness.services import asyncpg_url, postgres_ddl  # noqa: E402

WORKER = ROOT / "bench" / "db_path_worker.py"


def tree_label(tree: Path) -> str:
    """The tree's commit (short), with ``+`` when its working tree differs from it."""
    try:
        commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return tree.name
    return commit + ("+" if dirty else "")


def _worker(tree: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.Popen([sys.executable, str(WORKER), *args], cwd=tree, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=900)
    if process.returncode != 0:
        raise RuntimeError(f"db_path_worker failed ({process.returncode}): {err[-2000:]}")
    return out


async def one_run(tree: Path, database: str, processes: int, images: int, lanes: int) -> dict[str, Any]:
    """``processes`` workers of ``tree`` on one batch of a fresh database; their sums."""
    tag = f"dbpath{uuid.uuid4().hex[:8]}"
    batch = "bench"
    with tempfile.TemporaryDirectory(prefix="pe-dbpath-") as tmp:
        if database == "postgresql":
            await postgres_ddl(POSTGRES_ADMIN_URL, f'CREATE DATABASE "{tag}"')
            url = asyncpg_url(POSTGRES_ADMIN_URL, tag)
        else:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        try:
            _finish(_worker(tree, "--url", url, "--batch", batch, "--prepare"))
            workers = [
                _worker(tree, "--url", url, "--batch", batch, "--images", str(images), "--lanes", str(lanes),
                        "--owner", f"w{n}")
                for n in range(processes)
            ]
            results = [json.loads(_finish(w).strip().splitlines()[-1]) for w in workers]
        finally:
            if database == "postgresql":
                await postgres_ddl(POSTGRES_ADMIN_URL, f'DROP DATABASE IF EXISTS "{tag}" WITH (FORCE)')
    total = sum(r["images"] for r in results)
    return {
        "cpu_ms_per_image": 1000 * sum(r["cpu_s"] for r in results) / total,
        "images_per_s": total / max(r["wall_s"] for r in results),
        "writes_per_image": sum(r["commits"] for r in results) / total,
        "statements_per_image": sum(r["statements"] for r in results) / total,
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and range of each figure over the rounds."""
    out: dict[str, Any] = {}
    for name in runs[0]:
        values = [r[name] for r in runs]
        out[name] = {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
                     "max": round(max(values), 3)}
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    labels = [tree_label(t) for t in trees]
    configs = [(d, int(p)) for d in args.database.split(",") for p in args.processes.split(",")]
    raw: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for round_ in range(1, args.rounds + 1):
        for database, processes in configs:
            for tree, label in zip(trees, labels, strict=True):
                result = await one_run(tree, database, processes, args.images, args.lanes)
                raw.setdefault((label, database, processes), []).append(result)
                print(f"round {round_}/{args.rounds} {label} {database} x{processes}: "
                      f"{result['cpu_ms_per_image']:.2f} ms CPU/img, {result['images_per_s']:.0f} img/s",
                      file=sys.stderr, flush=True)
    return {
        "machine": machine_facts(),
        "config": {"trees": dict(zip(labels, map(str, trees), strict=True)), "images": args.images,
                   "lanes": args.lanes, "rounds": args.rounds},
        "runs": [
            {"tree": label, "database": database, "processes": processes, **summarise(runs),
             "vs_control": paired_ratios(runs, raw[(labels[0], database, processes)]),
             "rounds": [{name: round(value, 3) for name, value in r.items()} for r in runs]}
            for (label, database, processes), runs in raw.items()
        ],
    }


def paired_ratios(runs: list[dict[str, Any]], control: list[dict[str, Any]]) -> dict[str, float]:
    """Each figure over the control's in the same round, the median of those ratios: the machine
    drifts between rounds (here by up to 2x), much less between two runs side by side."""
    return {
        name: round(statistics.median(r[name] / c[name] for r, c in zip(runs, control, strict=True)), 3)
        for name in ("cpu_ms_per_image", "images_per_s")
    }


def table(result: dict[str, Any]) -> str:
    """One row per tree and configuration: medians, with the range of CPU per image."""
    lines = [
        "| tree | db | processes | CPU ms/img (min-max) | images/s | writes/img | statements/img "
        "| CPU, images/s over the control's (same round, median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(result["runs"], key=lambda r: (r["database"], r["processes"])):
        cpu, ratio = r["cpu_ms_per_image"], r["vs_control"]
        lines.append(
            f"| {r['tree']} | {r['database']} | {r['processes']} | {cpu['median']} ({cpu['min']}-{cpu['max']}) "
            f"| {r['images_per_s']['median']:.0f} | {r['writes_per_image']['median']} "
            f"| {r['statements_per_image']['median']} | {ratio['cpu_ms_per_image']}, {ratio['images_per_s']} |"
        )
    return "\n".join(lines)


def write_plot(path: Path, result: dict[str, Any]) -> None:
    """Left: CPU ms per image per configuration, one bar per tree (median, min-max whiskers).
    Right: each tree's CPU per image and images/s over the control's in the same round (median)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = sorted({(r["database"], r["processes"]) for r in result["runs"]})
    names = [f"{d}, {p} process{'es' if p > 1 else ''}" for d, p in configs]
    trees = list(result["config"]["trees"])
    width = 0.8 / len(trees)
    centres = [n + width * (len(trees) - 1) / 2 for n in range(len(configs))]
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(10, 4 * len(configs)), 4.5))
    for i, label in enumerate(trees):
        rows = {(r["database"], r["processes"]): r for r in result["runs"] if r["tree"] == label}
        xs = [n + i * width for n in range(len(configs))]
        cpu = [rows[c]["cpu_ms_per_image"] for c in configs]
        errors = [[v["median"] - v["min"] for v in cpu], [v["max"] - v["median"] for v in cpu]]
        left.bar(xs, [v["median"] for v in cpu], width, yerr=errors, capsize=3, label=label)
    left.set_ylabel("worker CPU ms per image (database path only)")
    for ax in (left, right):
        ax.set_xticks(centres)
        ax.set_xticklabels(names, fontsize=8)
    left.legend()
    for i, label in enumerate(trees[1:], start=1):
        rows = {(r["database"], r["processes"]): r["vs_control"] for r in result["runs"] if r["tree"] == label}
        xs = [n + (i - 1) * 0.4 for n in range(len(configs))]
        right.bar(xs, [rows[c]["cpu_ms_per_image"] for c in configs], 0.38, label=f"{label}: CPU per image")
        right.bar([x + 0.4 for x in xs], [rows[c]["images_per_s"] for c in configs], 0.38, label=f"{label}: images/s")
    right.axhline(1.0, color="grey", linewidth=1)
    right.set_ylabel(f"over {trees[0]}'s, same round (median)")
    right.legend(fontsize=8)
    fig.suptitle(f"The worker's database path, {result['config']['images']} images x {result['config']['rounds']} "
                 f"rounds, {result['machine']['date_utc']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", default=str(ROOT), help="checkouts to measure, comma-separated (control first)")
    parser.add_argument("--database", default="sqlite,postgresql", help="sqlite, postgresql, or both comma-separated")
    parser.add_argument("--processes", default="1", help="worker process counts (one batch), comma-separated")
    parser.add_argument("--images", type=int, default=400, help="measured images per worker process and run")
    parser.add_argument("--lanes", type=int, default=4, help="images in flight per worker process")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each tree, alternating")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="folder for the JSON and PNG")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    stamp = result["machine"]["date_utc"].replace("-", "").replace(":", "")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = args.out / f"db-path-{stamp}.json", args.out / f"db-path-{stamp}.png"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    write_plot(png_path, result)
    print(table(result))
    print(f"\nwrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
