"""bench/gpu_variants.py --dry-run end to end: the GPU experiment, run on the CPU at toy sizes, so it
cannot rot between the rare loans of a GPU. Random weights in the real formats."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.weights import write_random_weights

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.models
@pytest.mark.timeout(600)
def test_dry_run_writes_every_section(tmp_path: Path) -> None:
    weights = write_random_weights(tmp_path / "weights")
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_variants.py"), "--weights", str(weights),
                          "--out", str(tmp_path / "out"), "--dry-run"], capture_output=True, text=True, timeout=550)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "gpu_variants.json").read_text())
    assert result["device"] == "cpu" and result["gflop_per_image"]["background"] > 0

    # One row per layout and autotuning choice, each with its time and arithmetic rate.
    background = result["background"]
    assert {(r["cudnn_benchmark"], r["layout"]) for r in background} == {
        (False, "channels_last"), (False, "contiguous"), (True, "channels_last"), (True, "contiguous")}
    assert all(r["ms_per_image"] > 0 and r["tflops"] > 0 for r in background)

    faces = [r for r in result["faces"] if "restorer_ms_per_face" in r]
    assert {r["cudnn_benchmark"] for r in faces} == {False, True}
    assert all(r["restorer_ms_per_face"] > 0 and r["parser_ms_per_face"] > 0 for r in faces)

    # The engine with and without per-step waits: step times only from the synced calls.
    engine = result["engine"]
    assert {(r["quality"], r["step_sync"]) for r in engine} == {
        ("best", False), ("best", True), ("balanced", False), ("balanced", True)}
    for row in engine:
        assert row["images_per_s"] > 0
        assert ("step_ms_per_image" in row) == row["step_sync"]
    best = next(r for r in engine if r["quality"] == "best" and r["step_sync"])
    assert {"detect", "restore", "parse", "background", "paste"} <= set(best["step_ms_per_image"])
