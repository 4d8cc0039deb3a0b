"""bench/ceiling_pairs.py's pure part: pairing control and change runs and summarising them."""

from __future__ import annotations

from bench.ceiling_pairs import pair_rows, summarise, table


def _run(database: str, workers: int, processor_ms: float, statements: float | None = 3.0, failed: int = 0,
         radosgw_ms: float = 2.5) -> dict:
    return {
        "database": database, "workers": workers, "batches": 1, "failed": failed, "images_per_s": 100.0,
        "cpu_ms_per_image": {"processor": processor_ms, "radosgw": radosgw_ms},
        "processor_own_cpu_ms_per_image": processor_ms - 1.5,
        "processor_own_over_radosgw": (processor_ms - 1.5) / radosgw_ms,
        "write_transactions_per_image": 1.4, "statements_per_image": statements, "lock_per_image_x_images_per_s": 0.2,
    }


def _result(*runs: dict) -> dict:
    return {"tree_commit": "abc", "runs": list(runs)}


def test_the_nth_control_pairs_with_the_nth_change_and_failed_runs_are_left_out() -> None:
    controls = [_result(_run("sqlite", 1, 6.0), _run("postgresql", 1, 5.0)),
                _result(_run("sqlite", 1, 8.0), _run("postgresql", 1, 5.0))]
    changes = [_result(_run("sqlite", 1, 5.4), _run("postgresql", 1, 6.0, failed=2)),
               _result(_run("sqlite", 1, 6.0), _run("postgresql", 4, 5.0)),
               _result(_run("sqlite", 1, 1.0))]  # no control to pair with
    rows = pair_rows(controls, changes)
    assert [(r["pair"], r["database"], r["workers"]) for r in rows] == [(1, "sqlite", 1), (2, "sqlite", 1)]
    [summary] = summarise(rows)
    assert summary["pairs"] == 2
    assert summary["control"]["processor_cpu_ms_per_image"] == 7.0 and summary["change"]["processor_cpu_ms_per_image"] == 5.7
    # Each pair's own ratio (0.9 and 0.75), not the ratio of the medians (0.814).
    assert summary["processor_cpu_pair_ratio"] == {"median": 0.825, "min": 0.75, "max": 0.9}


def test_a_figure_an_older_run_lacks_is_marked_missing() -> None:
    rows = pair_rows([_result(_run("sqlite", 1, 6.0, statements=None))], [_result(_run("sqlite", 1, 6.0))])
    summary = summarise(rows)
    assert summary[0]["control"]["statements_per_image"] is None and summary[0]["change"]["statements_per_image"] == 3
    line = table(summary).splitlines()[2]
    assert "| – → 3 |" in line and line.endswith("| **1** (1–1) | **1** (1–1) |")


def test_the_ratio_over_radosgw_leaves_out_a_machine_that_slowed_within_the_pair() -> None:
    # The change's run found the machine 20 % slower: radosgw, doing the same work, too.
    rows = pair_rows([_result(_run("postgresql", 2, 6.0, radosgw_ms=2.5))],
                     [_result(_run("postgresql", 2, 7.2, radosgw_ms=3.0))])
    [summary] = summarise(rows)
    assert summary["processor_cpu_pair_ratio"]["median"] == 1.2
    assert summary["processor_over_radosgw_pair_ratio"] == {"median": 1.0, "min": 1.0, "max": 1.0}


def test_the_locks_share_as_the_server_holds_it_is_summarised_where_it_was_sampled() -> None:
    # Runs taken with --sample-locks carry it; the median of each side goes in the table.
    controls = [_result({**_run("postgresql", 4, 9.0), "server_locked_share": s}) for s in (0.7, 0.72)]
    changes = [_result({**_run("postgresql", 4, 8.0), "server_locked_share": s}) for s in (0.2, 0.16)]
    [summary] = summarise(pair_rows(controls, changes))
    assert (summary["control"]["server_locked_share"], summary["change"]["server_locked_share"]) == (0.71, 0.18)
    assert "| 0.71 → 0.18 |" in table([summary])
