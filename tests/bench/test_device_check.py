"""bench/device_check.sh --dry-run end to end: the one GPU command, run on the CPU at toy sizes.

The GPU machine is lent for minutes at a time, so the script it runs must not rot between loans:
this runs the very same script (its install step finds the stack importable here and skips the
wheels), the sweep, the device check's own measurements and the plot, then checks that every
section the GPU run reports is in the JSON. Random weights in the real formats; 64-pixel pictures,
but the face networks always run at 512 px, so this takes minutes on two shared cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

ROOT = Path(__file__).resolve().parents[2]
NETWORKS = {"detector", "restorer", "parser", "background"}


@pytest.mark.models
@pytest.mark.timeout(1200)
def test_dry_run_writes_every_section_of_the_gpu_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    started = time.perf_counter()
    run = subprocess.run(["bash", str(ROOT / "bench" / "device_check.sh"), "--dry-run", str(out)],
                         env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=1100)
    wall = time.perf_counter() - started
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    print(f"device_check.sh --dry-run: {wall:.0f} s wall")
    assert "best: achieved GFLOP/s" in run.stdout and "ratio (engine/stock throughput)" in run.stdout

    result = json.loads((out / "device_check.json").read_text())
    assert result["dry_run"] is True and result["device"] == "cpu" and result["gpu"] is None
    engine = result["engine"]
    assert engine == json.loads((out / "engine.json").read_text())

    # Images/s per micro-batch at best, balanced megapixels/s, time per step.
    [best] = engine["sweep"]["best"]
    assert best["batch"] == 1 and best["images_per_s"] > 0
    assert {"detect", "align", "restore", "parse", "background", "paste"} <= set(best["step_ms_per_image"])
    assert all(ms >= 0 for ms in best["step_ms_per_image"].values()) and best["step_ms_per_image"]["restore"] > 0
    [balanced] = engine["sweep"]["balanced"]
    assert balanced["megapixels_per_s"] == pytest.approx(balanced["images_per_s"] * 64 * 64 / 1e6, rel=1e-2)

    # Achieved FLOP/s against the peak each network is measured against.
    assert set(best["efficiency"]) == NETWORKS | {"overall"}
    assert all(row["gflops"] > 0 and 0 < row["pct_of_peak"] for row in best["efficiency"].values())
    assert set(engine["peak"]["per_network"]) == NETWORKS

    # Each network's reduced precision against fp32: a difference or the reason it cannot run.
    rows = result["precision_vs_fp32"]
    assert {row["network"] for row in rows} == NETWORKS and {row["precision"] for row in rows} == {"bf16"}
    assert all("unsupported" in row or (row["max"] >= row["mean"] >= 0 and row["finite"]) for row in rows)

    # Peak memory is a CUDA figure: None per micro-batch on the CPU, and said so.
    assert result["memory"]["peak_mib_by_micro_batch"] == {"1": None}
    assert "CPU" in result["memory"]["note"] and result["memory"]["limits"]["max_faces_per_forward"] >= 1

    [cold] = result["cold_start"]
    assert cold["compile"] == "off" and cold["load_s"] > 0 and cold["first_image_s"] > 0

    # The engine against the stock GFPGANer loop, and the device path against the reference path.
    assert engine["stock"]["images_per_s"] > 0 and engine["ratio_engine_over_stock"] > 0
    assert engine["max_abs_diff"] <= 2
    paths = result["paths"]
    assert paths["ratio_reference_over_device"] > 0 and paths["max_abs_diff_levels"] <= 2
    assert set(result["section_seconds"]) == {"cold_start", "memory", "precision", "paths"}

    picture = cv2.imread(str(out / "device_check.png"))
    assert picture is not None and picture.shape[0] > 100 and picture.shape[1] > 100

    # bench/gpu_variants.py, run by the same script: each network per autotuning and layout, the
    # engine with and without waiting for the device at each step (step times only from the latter).
    variants = json.loads((out / "gpu_variants.json").read_text())
    assert variants["device"] == "cpu" and variants["gflop_per_image"]["background"] > 0
    background = variants["background"]
    assert {(r["cudnn_benchmark"], r["layout"]) for r in background} == {
        (False, "channels_last"), (False, "contiguous"), (True, "channels_last"), (True, "contiguous")}
    assert all(r["ms_per_image"] > 0 and r["tflops"] > 0 for r in background)
    faces = [r for r in variants["faces"] if "restorer_ms_per_face" in r]
    assert {r["cudnn_benchmark"] for r in faces} == {False, True}
    assert all(r["restorer_ms_per_face"] > 0 and r["parser_ms_per_face"] > 0 for r in faces)
    runs = variants["engine"]
    assert {(r["quality"], r["step_sync"]) for r in runs} == {
        ("best", False), ("best", True), ("balanced", False), ("balanced", True)}
    assert all(r["images_per_s"] > 0 and ("step_ms_per_image" in r) == r["step_sync"] for r in runs)
    synced = next(r for r in runs if r["quality"] == "best" and r["step_sync"])
    assert {"detect", "restore", "parse", "background", "paste"} <= set(synced["step_ms_per_image"])

