"""Per-network precision: the settings' resolution and ``photoenhance weights check --precision``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def test_a_precision_the_device_cannot_run_is_reported_not_raised() -> None:
    models = Models(background=BackgroundNet(_NoHalf(), scale=1, key="fake"))
    rows = compare_precisions(models, torch.device("cpu"), size=32)
    by_precision = {row["precision"]: row for row in rows}
    assert by_precision["bf16"]["finite"] and 0 < by_precision["bf16"]["max"] < 5
    assert "not implemented for 'Half'" in by_precision["fp16"]["unsupported"]
    table = format_rows(rows, torch.device("cpu"))
    assert "unsupported here" in table and "levels of 8 bits" in table


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
