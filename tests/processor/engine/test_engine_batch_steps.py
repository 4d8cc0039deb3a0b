"""Pipeline behaviour that needs no weight files: out-of-memory back-off and failure isolation."""

from __future__ import annotations

import numpy as np
import torch

from photoenhance.contracts.options import EnhanceOptions, Quality
from processor.engine.batch_steps import Limits, Pipeline, _Job
from processor.engine.errors import ImageError
from processor.engine.imageio import DecodedImage
from processor.engine.models import Models
from processor.engine.networks import BackgroundNet
from processor.engine.records import EnhanceRequest, EnhanceResult


class _SmallMemoryNet(torch.nn.Module):
    """Doubles the size (nearest) but 'runs out of memory' on windows wider than ``limit`` pixels."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.widths: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.widths.append(x.shape[-1])
        if x.shape[-1] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


def _pipeline(limit: int) -> tuple[Pipeline, _SmallMemoryNet]:
    net = _SmallMemoryNet(limit)
    models = Models(background=BackgroundNet(net, scale=2, key="fake", multiple=1))
    limits = Limits(tile_pad=4, oom_first_tile=64, oom_min_tile=16)
    return Pipeline(torch.device("cpu"), frozenset({Quality.BALANCED}), models, limits), net


def _request(size: int, tile: int = 0) -> EnhanceRequest:
    pixels = np.random.default_rng(size).integers(0, 256, (size, size, 3)).astype(np.uint8)
    image = DecodedImage(pixels, "png", size, size, False, 8)
    return EnhanceRequest(image, EnhanceOptions(quality=Quality.BALANCED, upscale=2, tile=tile))


def test_out_of_memory_halves_the_tile_until_it_fits() -> None:
    pipeline, net = _pipeline(limit=40)
    [result] = pipeline.run([_request(100)])
    assert isinstance(result, EnhanceResult), result
    assert result.pixels.shape == (200, 200, 3)
    assert result.report["tile"] == 32  # untiled failed, 64 failed (72-pixel windows), 32 fitted
    assert max(net.widths[-1:]) <= 40
    untiled, _ = _pipeline(limit=10_000)
    [reference] = untiled.run([_request(100)])
    np.testing.assert_array_equal(result.pixels, reference.pixels)  # nearest: tiling changes nothing


def test_out_of_memory_at_the_smallest_tile_fails_only_that_image() -> None:
    pipeline, _ = _pipeline(limit=8)
    results = pipeline.run([_request(60)])
    assert isinstance(results[0], ImageError) and results[0].code == "processing_failed"
    assert "out of memory" in results[0].reason


def test_step_sync_waits_for_the_device_around_each_step(monkeypatch) -> None:
    """ENGINE_STEP_SYNC: a step's time covers its device work. No GPU here: the CUDA device is named
    only, and torch.cuda.synchronize (the edge that needs one) is replaced by a recorder."""
    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append("sync"))
    jobs = [_Job(0, _request(8)), _Job(1, _request(8))]

    def step(job: _Job) -> None:
        calls.append(f"step {job.index}")

    synced = Pipeline(torch.device("cuda"), frozenset({Quality.BALANCED}), step_sync=True)
    synced._each(jobs, "paste", step)
    assert calls == ["sync", "step 0", "sync", "sync", "step 1", "sync"]
    assert all("paste" in job.timings for job in jobs)

    calls.clear()
    Pipeline(torch.device("cuda"), frozenset({Quality.BALANCED}))._each(jobs, "paste", step)
    assert calls == ["step 0", "step 1"]  # off by default: the host runs ahead, as in production
