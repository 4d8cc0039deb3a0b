"""Per-network precision: the settings' resolution and ``photoenhance weights check --precision``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from processor.engine import precision_check
from processor.engine.models import Models
from processor.engine.networks import BackgroundNet
from processor.engine.precision import resolve_precision
from processor.engine.precision_check import compare_precisions, format_rows

ROOT = Path(__file__).resolve().parents[3]


def test_defaults_follow_the_device_and_bad_values_are_refused() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("restorer", "auto", cpu) == "fp32"
    assert resolve_precision("restorer", "auto", cuda) == "tf32"
    assert resolve_precision("parser", "auto", cuda) == "tf32"
    assert resolve_precision("background", "auto", cuda) == "fp16"
    assert resolve_precision("background", "tf32", cpu) == "fp32"  # no TF32 on a CPU
    assert resolve_precision("restorer", "BF16", cpu) == "bf16"
    with pytest.raises(ValueError, match="precision of restorer"):
        resolve_precision("restorer", "fp8", cpu)


class _NoHalf(torch.nn.Module):
    """A convolution that, like some CPU builds, has no float16 kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float16:
            raise RuntimeError('"slow_conv2d_cpu" not implemented for \'Half\'')
        return torch.sigmoid(self.conv(x))


def test_a_precision_the_device_cannot_run_is_reported_not_raised(monkeypatch) -> None:
    # As on a CPU with native bf16 and fp16 (AVX-512): the networks themselves are run and refuse.
    for choice in ("bf16", "fp16"):
        monkeypatch.setitem(precision_check.NATIVE_ON_CPU, choice, lambda: True)
    models = Models(background=BackgroundNet(_NoHalf(), scale=1, key="fake"))
    rows = compare_precisions(models, torch.device("cpu"), size=32)
    by_precision = {row["precision"]: row for row in rows}
    assert by_precision["bf16"]["finite"] and 0 < by_precision["bf16"]["max"] < 5
    assert "not implemented for 'Half'" in by_precision["fp16"]["unsupported"]
    table = format_rows(rows, torch.device("cpu"))
    assert "unsupported here" in table and "levels of 8 bits" in table


class _Counting(torch.nn.Module):
    """A background network that records the dtypes it was run in (the check runs copies of it,
    so the record is the class's)."""

    seen: list[torch.dtype] = []

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _Counting.seen.append(x.dtype)
        return torch.sigmoid(self.conv(x))


def test_a_cpu_without_native_reduced_precision_is_told_before_any_network_runs_in_it(monkeypatch) -> None:
    # An AVX2 CPU: emulated bf16 took over ten minutes for one GFPGAN pass on such a machine.
    monkeypatch.setitem(precision_check.NATIVE_ON_CPU, "bf16", lambda: False)
    monkeypatch.setitem(precision_check.NATIVE_ON_CPU, "fp16", lambda: True)
    net = _Counting()
    _Counting.seen.clear()
    rows = compare_precisions(Models(background=BackgroundNet(net, scale=1, key="fake")), torch.device("cpu"), size=32)
    by_precision = {row["precision"]: row for row in rows}
    assert "no native bf16" in by_precision["bf16"]["unsupported"] and "AVX-512" in by_precision["bf16"]["unsupported"]
    assert by_precision["fp16"]["finite"]
    assert torch.bfloat16 not in _Counting.seen and torch.float16 in _Counting.seen
    assert precision_check.cpu_cannot_run("bf16", torch.device("cuda")) is None  # a GPU is never refused here
    assert precision_check.cpu_cannot_run("fp32", torch.device("cpu")) is None


@pytest.mark.models
def test_weights_check_precision_prints_each_network_it_loads(random_weights_dir: Path) -> None:
    """The operator's command end to end, on the level whose network is cheap on a CPU: ``balanced``
    loads Real-ESRGAN alone. (GFPGAN and ParseNet take 512-pixel faces: in bf16 and fp16 on this
    CPU they take minutes, so their rows come from the same function as the background's, which the
    test above covers; on a GPU the device check runs every network.)"""
    env = {**os.environ, "WEIGHTS_DIR": str(random_weights_dir), "ALLOW_CUSTOM_WEIGHTS": "true", "DEVICE": "cpu",
           "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "photoenhance.cli", "weights", "check", "--quality", "balanced",
               "--precision", "--precision-size", "32"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    print(done.stdout)
    assert done.returncode == 0, done.stderr
    for precision in ("bf16", "fp16"):
        assert f"{'background':<11} {precision}" in done.stdout
    assert "restorer" not in done.stdout  # not loaded for balanced
