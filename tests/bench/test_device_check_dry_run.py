"""bench/device_check.sh --dry-run: the one GPU command, run end to end on the CPU at toy sizes.

So the script the GPU machine runs (install, weights, sweep, cold start, memory, precision, paths,
JSON and PNG) cannot rot between the rare occasions a GPU is lent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.models


def test_device_check_dry_run_writes_its_json_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "DEVICE_DIR": str(tmp_path / "no-prepared-folder")}
    done = subprocess.run(["bash", str(ROOT / "bench" / "device_check.sh"), "--dry-run", str(out)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    print(done.stdout[-3000:], done.stderr[-3000:])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "device_check.json").read_text())
    assert result["dry_run"] is True and result["device"] == "cpu"
    assert [entry["batch"] for entry in result["engine"]["sweep"]["best"]] == [1]
    assert result["engine"]["sweep"]["balanced"][0]["images_per_s"] > 0
    assert "stock_ratio" in json.dumps(result["engine"]) or "stock" in json.dumps(result["engine"])
    assert result["cold_start"][0]["load_s"] > 0 and result["cold_start"][0]["first_image_s"] > 0
    networks = {row["network"] for row in result["precision_vs_fp32"]}
    assert networks == {"detector", "restorer", "parser", "background"}
    assert result["paths"]["max_abs_diff_levels"] <= 2
    assert (out / "device_check.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
