"""infra/local/processors.sh: which workers up.sh starts for PROCESSORS (run in bash, as up.sh does).

up.sh itself installs and starts services, so it is not run here; its plan is this pure function,
and the test checks up.sh uses it before starting anything.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

LOCAL = Path(__file__).resolve().parents[2] / "infra" / "local"


def plan(spec: str, served: str, port: int = 8082, taken: str = "") -> tuple[int, list[tuple[str, int, str]], str]:
    """(status, [(name, port, levels)], stderr) of ``processor_plan`` under up.sh's shell options."""
    result = subprocess.run(
        ["bash", "-c", 'set -euo pipefail; source "$1"; processor_plan "$2" "$3" "$4" "$5"', "bash",
         str(LOCAL / "processors.sh"), spec, served, str(port), taken],
        capture_output=True, text=True, timeout=30,
    )
    rows = [line.split(" ") for line in result.stdout.splitlines()]
    return result.returncode, [(name, int(p), levels) for name, p, levels in rows], result.stderr


def test_default_is_one_worker_serving_the_levels_present() -> None:
    assert plan("", "fast,balanced") == (0, [("processor-1", 8082, "fast,balanced")], "")
    assert plan("", "fast") == (0, [("processor-1", 8082, "fast")], "")


def test_a_number_keeps_meaning_that_many_workers_on_every_level() -> None:
    status, workers, _ = plan("2", "fast,balanced,best", taken="8080 8081")
    assert status == 0
    assert workers == [("processor-1", 8082, "fast,balanced,best"), ("processor-2", 8083, "fast,balanced,best")]


def test_levels_and_counts_give_workers_per_level_with_their_own_ports() -> None:
    status, workers, _ = plan("fast:2,balanced:1", "fast,balanced,best")
    assert status == 0
    assert workers == [
        ("processor-fast-1", 8082, "fast"), ("processor-fast-2", 8083, "fast"), ("processor-balanced-1", 8084, "balanced")
    ]
    assert len({name for name, _, _ in workers}) == len(workers)  # names are log files and worker ids


def test_ports_step_over_the_other_services() -> None:
    # the notifier's /metrics listens on 8083 by default: a second worker there would not start
    _, workers, _ = plan("fast:1,balanced:1,best:1", "fast,balanced,best", taken="8080 8081 8083 8083")
    assert [port for _, port, _ in workers] == [8082, 8084, 8085]


def test_a_level_without_weights_is_left_out_with_a_warning() -> None:
    status, workers, err = plan("fast:1,best:1", "fast,balanced")
    assert status == 0 and workers == [("processor-fast-1", 8082, "fast")]
    assert "no best worker: its weights are missing" in err


@pytest.mark.parametrize(
    ("spec", "served", "message"),
    [
        ("best:1", "fast", "starts no worker"),
        ("0", "fast", "at least one worker"),
        ("fast:0", "fast", "starts no worker"),
        ("fast=1", "fast", "is not LEVEL:COUNT"),
        ("ultra:1", "fast", "is not LEVEL:COUNT"),
        ("fast:1,fast:2", "fast", "fast is named twice"),
    ],
)
def test_a_plan_that_cannot_work_is_refused_with_its_reason(spec: str, served: str, message: str) -> None:
    status, _, err = plan(spec, served)
    assert status == 2 and message in err


def test_up_sh_plans_before_it_starts_anything() -> None:
    text = (LOCAL / "up.sh").read_text()
    assert 'source "$HERE/processors.sh"' in text
    planned = text.index('processor_plan "${PROCESSORS:-}" "$PROCESSOR_QUALITIES"')
    assert planned < text.index("run ingest ingest")
    assert '--worker-id "$(hostname)-$name"' in text
    assert subprocess.run(["bash", "-n", str(LOCAL / "up.sh")], timeout=30).returncode == 0
