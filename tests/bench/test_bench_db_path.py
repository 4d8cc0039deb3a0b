"""bench/db_path.py: the worker's database path measured on its own, run for real (small)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.db_path import ROOT, summarise, table


def test_summaries_take_the_median_and_range_of_each_figure() -> None:
    runs = [{"cpu_ms_per_image": v, "images_per_s": 10 * v} for v in (3.0, 1.0, 2.0)]
    assert summarise(runs) == {
        "cpu_ms_per_image": {"median": 2.0, "min": 1.0, "max": 3.0},
        "images_per_s": {"median": 20.0, "min": 10.0, "max": 30.0},
    }


def test_a_small_run_on_sqlite_counts_what_each_image_costs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.db_path", "--database", "sqlite", "--images", "24", "--rounds", "1",
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    [result_file] = tmp_path.glob("db-path-*.json")
    result = json.loads(result_file.read_text())
    [run] = result["runs"]
    assert (run["database"], run["processes"]) == ("sqlite", 1)
    # One start and one completion per image, grouped: at most two write transactions each.
    assert 0 < run["writes_per_image"]["median"] <= 2
    assert run["statements_per_image"]["median"] >= 2 and run["cpu_ms_per_image"]["median"] > 0
    assert list(tmp_path.glob("db-path-*.png"))
    assert run["tree"] in table(result)
