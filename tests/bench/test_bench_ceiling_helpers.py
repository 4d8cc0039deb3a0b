"""The pure helpers behind bench/ceiling.py: percentiles and the tables. No timing here."""

from __future__ import annotations

from bench.ceiling import _pct, comparison, table


def _run(workers: int, images_per_s: float, processor: float, writes: float) -> dict:
    return {
        "database": "sqlite", "workers": workers, "batches": 1, "engine": "passthrough", "images_per_s": images_per_s,
        "cpu_ms_per_image": {"processor": processor, "radosgw": 6.0, "ceph-osd": 3.0, "notifier": 0.0, "broker": None},
        "processor_own_cpu_ms_per_image": processor - 2.5, "processor_codec_cpu_ms_per_image": 2.5,
        "processor_own_over_radosgw": round((processor - 2.5) / 6.0, 2), "write_transactions_per_image": writes,
        "read_transactions_per_image": 0.0, "lock_hold_ms": {"p50": 1.0, "p99": 9.0, "per_image": 2.0},
        "lock_per_image_x_images_per_s": 0.05,
    }


def test_percentiles_pick_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (_pct(values, 0.5), _pct(values, 0.99), _pct(values, 0.0)) == (51.0, 99.0, 1.0)
    assert _pct([], 0.5) == 0.0


def test_table_has_one_row_per_run_and_marks_missing_figures() -> None:
    text = table({"runs": [_run(1, 10.0, 42.0, 4.0), _run(4, 20.0, 22.0, 1.7)]}).splitlines()
    assert len(text) == 4 and text[0].count("|") == text[1].count("|") == text[2].count("|")
    assert "| sqlite | 4 | 1 | 20 | 22 | 19.5 |" in text[3] and "| – |" in text[3]


def test_comparison_pairs_runs_of_the_same_configuration() -> None:
    before = {"runs": [_run(1, 10.0, 42.0, 4.0), _run(2, 12.0, 44.0, 4.0)]}
    after = {"runs": [_run(1, 15.0, 22.0, 1.7), _run(4, 20.0, 22.0, 1.7)]}
    rows = comparison(before, after).splitlines()[2:]
    assert rows == [rows[0]] and "10 → 15" in rows[0] and "4 → 1.7" in rows[0] and "42 → 22" in rows[0]
