"""Benchmark: the whole pipeline on this machine, upload to WebSocket, stage by stage.

    .venv/bin/python -m bench.pipeline                 # the documented run (about 6 minutes here)
    .venv/bin/python -m bench.pipeline --quick         # 40 images, one scaling configuration
    .venv/bin/python -m bench.pipeline --images 1000 --scale-images 300 --out /tmp/bench

Brings up a private stack (bench/stack.py: Ceph RGW with bucket notifications into the local
RabbitMQ, its own exchange and queue names, a fresh SQLite database or with ``--database
postgresql`` a fresh PostgreSQL one, ingest, notifier, and ``photoenhance processor`` workers at
``fast``), then measures batches (bench/runs.py) and reports (bench/report.py):

1. **Main run**: ``--workers`` workers with ``--prefetch`` (default: the settings' ``PREFETCH``).
   A batch of ``--images`` JPEGs (``--size`` px square) is created through the API; a WebSocket
   subscriber connects and waits for its snapshot; the benchmark's taps (bench/taps.py) are bound;
   then the images are uploaded by presigned PUT (``--upload post``: the API's POST policies),
   ``--upload-concurrency`` at a time, while a second client polls ``GET /api/v1/batches/{id}``
   every ``--poll-interval`` s.
   Reported: throughput (and over time), latency from the upload's answer to the WebSocket event
   split into stages (bench/stages.py), the two clients side by side, and CPU time and memory of
   every process of the pipeline (bench/procstats.py).
2. **Scaling**: for each of ``--scale`` (workers × prefetch), fresh workers take a batch of
   ``--scale-images`` images, uploaded the same way (no poller, no taps): throughput, latency.

Before each measured batch the workers get a small warm-up batch (first-call costs: imports,
connections, allocator), which is not counted. Writes ``pipeline-<UTC time>.json`` and ``.png``
into ``--out`` (default bench/results/), prints the JSON, then Markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # also runs as `python bench/pipeline.py`
    sys.path.insert(0, str(ROOT))

from bench.machine import machine_facts  # noqa: E402
from bench.plot import write_plot  # noqa: E402
from bench.report import main_figures, scaling_figures, tables  # noqa: E402
from bench.runs import UploadPlan, make_images, measure  # noqa: E402
from bench.stack import bench_stack  # noqa: E402
from provision.notifications import rgw_topic_attributes  # noqa: E402


def _interpreter() -> str:
    """This Python as a command: relative to the repository when it lives there (.venv/bin/python)."""
    path = Path(sys.executable)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# -- the run ----------------------------------------------------------------------------------


def parse_scale(text: str) -> list[tuple[int, int]]:
    """``"1x1,2x8"`` → ``[(1, 1), (2, 8)]`` (workers × prefetch); empty: no scaling runs."""
    configs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        workers, _, prefetch = item.partition("x")
        configs.append((int(workers), int(prefetch)))
    return configs


async def run(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Bring the stack up, run the main batch and the scaling batches; every figure, and the plot's data."""
    facts = machine_facts()
    failure_logs = args.out / f"pipeline-failed-{facts['date_utc'].replace('-', '').replace(':', '')}"
    async with bench_stack(failure_logs, args.database) as stack, aiohttp.ClientSession() as session:
        settings = stack.settings
        prefetch = args.prefetch or settings.prefetch
        files = make_images(args.images, args.size, seed=0)
        config = {
            "images": args.images,
            "size_px": args.size,
            "jpeg_kib_mean": round(statistics.fmean(len(d) for d in files.values()) / 1024, 1),
            "options": {"quality": "fast", "upscale": 2},
            "upload": {"put": "presigned PUT", "post": "the API's POST policies"}[args.upload],
            "upload_concurrency": args.upload_concurrency,
            "upload_rate_per_s": args.rate or "unpaced",
            "poll_interval_s": args.poll_interval,
            "workers": args.workers,
            "prefetch": prefetch,
            "microbatch_max_images": settings.microbatch_max_images,
            "microbatch_window_ms": settings.microbatch_window_ms,
            "processor_io_threads": settings.processor_io_threads,
            "database": {"sqlite": "SQLite (one file, WAL)", "postgresql": "PostgreSQL (local)"}[args.database],
            "store": "Ceph RGW, non-persistent topic, amqp-ack-level="
            + rgw_topic_attributes(settings)["amqp-ack-level"],
            "reconciler": "off",
        }
        print(f"main run: {args.images} images, {args.workers} worker(s), prefetch {prefetch}", file=sys.stderr)
        plan = UploadPlan(args.size, args.upload, args.upload_concurrency, args.rate)
        crashes: list[dict[str, Any]] = []
        main_run = await measure(
            stack, session, files, plan, workers=args.workers, prefetch=prefetch, label="main",
            crashes=crashes, crash_logs=args.out, poll_interval_s=args.poll_interval, tap=True,
        )
        main, plot_data = main_figures(main_run, args.poll_interval)
        scaling = []
        for workers, scale_prefetch in parse_scale(args.scale):
            label = f"scaling {workers}x{scale_prefetch}"
            print(f"{label}: {args.scale_images} images", file=sys.stderr)
            batch_files = make_images(args.scale_images, args.size, seed=10_000 * (len(scaling) + 1))
            scale_run = await measure(
                stack, session, batch_files, plan, workers=workers, prefetch=scale_prefetch, label=label,
                crashes=crashes, crash_logs=args.out,
            )
            scaling.append(scaling_figures(scale_run, workers, scale_prefetch))
    result = {
        "benchmark": "pipeline",
        "command": " ".join([_interpreter(), "-m", "bench.pipeline", *sys.argv[1:]]),
        "machine": facts,
        "config": config,
        "main": main,
        "scaling": scaling,
        "radosgw_crashes": crashes,
    }
    return result, plot_data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500, help="images in the main run")
    parser.add_argument("--size", type=int, default=256, help="picture side in pixels")
    parser.add_argument("--workers", type=int, default=1, help="processor processes in the main run")
    parser.add_argument("--prefetch", type=int, default=0, help="PREFETCH of the main run (0: the settings' default)")
    parser.add_argument("--upload-concurrency", type=int, default=8, help="uploads in flight at once")
    parser.add_argument(
        "--upload", choices=["put", "post"], default="put",
        help="presigned PUTs (default) or the API's POST policies, as the web page uploads",
    )
    parser.add_argument("--rate", type=float, default=0, help="upload starts per second; 0: as fast as they go")
    parser.add_argument("--poll-interval", type=float, default=2.0, help="seconds between status polls")
    parser.add_argument("--scale", default="1x1,1x2,1x8,2x1,2x2,2x8", help="workers x prefetch configurations")
    parser.add_argument("--scale-images", type=int, default=200, help="images per scaling configuration")
    parser.add_argument(
        "--database", choices=["sqlite", "postgresql"], default="sqlite",
        help="a fresh SQLite file (default) or a fresh database on the local PostgreSQL (BENCH_POSTGRES_URL)",
    )
    parser.add_argument("--quick", action="store_true", help="40 images, one scaling configuration of 20")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="folder for the JSON and PNG")
    args = parser.parse_args()
    if args.quick:
        args.images, args.scale, args.scale_images = 40, "1x2", 20

    result, plot_data = asyncio.run(run(args))
    stamp = result["machine"]["date_utc"].replace("-", "").replace(":", "")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = args.out / f"pipeline-{stamp}.json", args.out / f"pipeline-{stamp}.png"
    text = json.dumps(result, indent=2)
    json_path.write_text(text + "\n")
    main_cfg = result["config"]
    write_plot(
        png_path, plot_data["stages"], plot_data["series"], result["main"]["throughput_over_time"]["bin_s"],
        plot_data["clients"], result["scaling"],
        f"PhotoEnhance pipeline, {main_cfg['images']} × {main_cfg['size_px']}² JPEG at fast, "
        f"{main_cfg['workers']} worker(s) × prefetch {main_cfg['prefetch']}; {result['machine']['cpu_cores']} cores "
        f"{result['machine']['cpu_model']}, {result['machine']['date_utc']}",
    )
    print(text)
    print()
    print(tables(result))
    print(f"\nwrote {json_path} and {png_path}")
    return 0 if all(r.get("failed", 0) == 0 for r in [result["main"], *result["scaling"]]) else 1


if __name__ == "__main__":
    sys.exit(main())
