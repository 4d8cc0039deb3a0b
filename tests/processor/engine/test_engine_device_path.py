"""The device path (ENGINE_PATH=device) on the CPU device against the reference path.

Real architectures with random weights; faces given by fixed landmarks (random detector weights find
none), StyleGAN noise fixed on every side. The reference path itself equals the stock GFPGANer and
RealESRGANer within 1 level (test_engine_models); the device path is compared with it. Faces sit
near the picture's edges and overlap; a micro-batch shares its forwards; the background is tiled.
Every figure is printed with ``FIGURE`` (run with ``-s``).
The out-of-memory tests inject ``torch.cuda.OutOfMemoryError`` (no GPU here) into small stand-in
networks, since what they check is the engine's control flow, not the networks.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from photoenhance.contracts.options import EnhanceOptions, Quality
from photoenhance.settings import Settings
from processor.engine import Engine, EnhanceRequest, EnhanceResult
from processor.engine.batch_steps import Limits, Pipeline
from processor.engine.device_path import DevicePipeline, choose_path
from processor.engine.errors import ImageError
from processor.engine.imageio import DecodedImage
from processor.engine.models import Models
from processor.engine.networks import BackgroundNet
from tests.processor.engine.test_engine_models import decoded, landmarks, max_diff, picture

BEST = EnhanceOptions(quality=Quality.BEST, upscale=2, fidelity=1.0)
BALANCED = EnhanceOptions(quality=Quality.BALANCED, upscale=2)


def _engine(weights: Path, path: str) -> Engine:
    return Engine.load(Settings(weights_dir=weights, allow_custom_weights=True, device="cpu", engine_path=path))


@pytest.fixture(scope="module")
def engines(random_weights_dir: Path):
    device, reference = _engine(random_weights_dir, "device"), _engine(random_weights_dir, "reference")
    assert isinstance(device._pipeline, DevicePipeline) and type(reference._pipeline) is Pipeline
    yield device, reference
    device.close()
    reference.close()


def test_auto_takes_the_device_path_and_bad_values_are_refused() -> None:
    assert choose_path("auto", torch.device("cpu")) == "reference"
    assert choose_path("auto", torch.device("cuda")) == "device"
    assert choose_path("device", torch.device("cpu")) == "device"
    assert choose_path("reference", torch.device("cpu")) == "reference"
    with pytest.raises(ValueError, match="ENGINE_PATH"):
        choose_path("gpu", torch.device("cpu"))


@pytest.mark.models
def test_device_path_equals_reference_with_edge_and_overlapping_faces(engines, monkeypatch) -> None:
    # The reference path equals the stock GFPGANer (test_engine_models); comparing the stock loop here
    # too took this test past its 10-minute limit on the shared CPUs.
    device, reference = engines
    # Picture A: two overlapping faces, one of them across the left edge. Picture B: a face off the top.
    faces_a = [landmarks(128, dx=-40), landmarks(128, dx=-20)]
    faces_b = [landmarks(96) - (0, 40)]
    a = EnhanceRequest(decoded(picture(128, seed=21)), BEST, faces=faces_a)
    b = EnhanceRequest(decoded(picture(96, seed=22)), EnhanceOptions(quality=Quality.BEST, upscale=2, fidelity=0.7),
                       faces=faces_b)
    # The device path with all three faces in one forward (as on a GPU); the reference one image at a time.
    monkeypatch.setattr(device._pipeline, "limits", dataclasses.replace(device._pipeline.limits, max_faces_per_forward=4))
    ours = device.enhance_batch([a, b])
    theirs = [reference.enhance_batch([request])[0] for request in (a, b)]
    assert all(isinstance(r, EnhanceResult) for r in ours + theirs), (ours, theirs)
    diffs = [max_diff(x.pixels, y.pixels) for x, y in zip(ours, theirs)]
    print(f"FIGURE device_batched_vs_reference_single_max_abs_diff={max(diffs)} (per image {diffs})")
    assert max(diffs) <= 2
    assert ours[0].report["faces_found"] == 2 and {"upload", "download"} <= set(ours[0].report["timings_ms"])



@pytest.mark.models
@pytest.mark.parametrize(("channels", "dtype", "upscale"),
                         [(3, np.uint8, 2.0), (3, np.uint8, 3.0), (4, np.uint8, 2.0), (1, np.uint8, 2.0),
                          (3, np.uint16, 2.0)])
def test_device_background_equals_reference(engines, channels: int, dtype: type, upscale: float) -> None:
    device, reference = engines
    request = EnhanceRequest(decoded(picture(48, seed=channels, channels=channels, dtype=dtype)),
                             EnhanceOptions(quality=Quality.BALANCED, upscale=upscale))
    [ours], [theirs] = device.enhance_batch([request]), reference.enhance_batch([request])
    assert ours.pixels.dtype == theirs.pixels.dtype and ours.pixels.shape == theirs.pixels.shape
    diff = max_diff(ours.pixels, theirs.pixels) / (257 if dtype == np.uint16 else 1)
    print(f"FIGURE device_balanced_vs_reference[{channels}ch,{np.dtype(dtype).name},x{upscale}]_max_abs_diff={diff:.2f}")
    assert diff <= 2


@pytest.mark.models
def test_device_tiled_background_equals_reference_untiled_along_tile_borders(engines, monkeypatch) -> None:
    device, reference = engines
    monkeypatch.setattr(device._pipeline, "limits", dataclasses.replace(device._pipeline.limits, tile_pad=24))
    pixels = picture(112, seed=7)
    [tiled] = device.enhance_batch([EnhanceRequest(decoded(pixels), EnhanceOptions(
        quality=Quality.BALANCED, upscale=2, tile=32))])
    [untiled] = reference.enhance_batch([EnhanceRequest(decoded(pixels), BALANCED)])
    diff = np.abs(untiled.pixels.astype(int) - tiled.pixels.astype(int)).max(axis=2)
    near = np.zeros(diff.shape, bool)
    for edge in range(64, diff.shape[0], 64):
        near[edge - 2:edge + 2, :] = True
        near[:, edge - 2:edge + 2] = True
    print(f"FIGURE device_tiled_vs_reference_untiled_max_abs_diff={diff.max()} along_tile_borders={diff[near].max()}")
    assert tiled.report["tile"] == 32
    assert diff.max() <= 2


# -- out of memory, injected ------------------------------------------------------------------------


class _Restorer(torch.nn.Module):
    """Stands in for GFPGAN: halves the face; 'runs out of memory' above ``limit`` faces, or on a face
    whose mean is above ``poison`` (one image that never fits)."""

    def __init__(self, limit: int, poison: float = 2.0) -> None:
        super().__init__()
        self.limit, self.poison, self.batches = limit, poison, []

    def forward(self, x: torch.Tensor, **_: object) -> tuple[torch.Tensor, None]:
        self.batches.append(len(x))
        if len(x) > self.limit or bool((x.mean(dim=(1, 2, 3)) > self.poison).any()):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")
        return x * 0.5, None


class _Parser(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        logits = torch.zeros(len(x), 19, x.shape[2], x.shape[3])
        logits[:, 1, 64:448, 64:448] = 1.0  # skin in the middle
        return (logits,)


def _oom_pipeline(limit: int, poison: float = 2.0) -> tuple[DevicePipeline, _Restorer]:
    restorer = _Restorer(limit, poison)
    upscale = torch.nn.Upsample(scale_factor=2, mode="nearest")
    models = Models(background=BackgroundNet(upscale, scale=2, key="fake"), restorer=restorer, parser=_Parser())
    pipeline = DevicePipeline(torch.device("cpu"), frozenset({Quality.BEST}), models,
                              Limits(max_faces_per_forward=4), precisions={})
    return pipeline, restorer


def _face_request(seed: int, value: int | None = None) -> EnhanceRequest:
    pixels = picture(64, seed=seed) if value is None else np.full((64, 64, 3), value, np.uint8)
    image = DecodedImage(pixels, "png", 64, 64, False, 8)
    return EnhanceRequest(image, BEST, faces=[landmarks(64), landmarks(64, dx=10)])


def test_out_of_memory_in_the_face_networks_halves_the_forward_and_loses_nothing() -> None:
    pipeline, restorer = _oom_pipeline(limit=1)
    results = pipeline.run([_face_request(1), _face_request(2)])
    assert all(isinstance(r, EnhanceResult) for r in results), results
    assert restorer.batches[:3] == [4, 2, 1] and max(restorer.batches[3:]) == 1
    roomy, _ = _oom_pipeline(limit=16)
    expected = roomy.run([_face_request(1), _face_request(2)])
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got.pixels, want.pixels)  # smaller forwards change nothing


def test_an_image_that_never_fits_fails_alone_and_the_engine_goes_on() -> None:
    # A white picture's faces (mean 1.0 in [-1, 1]) exceed the 'memory' even one at a time.
    pipeline, _ = _oom_pipeline(limit=4, poison=0.9)
    results = pipeline.run([_face_request(1), _face_request(0, value=255), _face_request(2)])
    assert isinstance(results[0], EnhanceResult) and isinstance(results[2], EnhanceResult)
    assert isinstance(results[1], ImageError) and results[1].code == "processing_failed"
    assert "out of memory" in results[1].reason
    [again] = pipeline.run([_face_request(3)])
    assert isinstance(again, EnhanceResult)
