"""The pure helpers behind bench/engine.py: sweep bookkeeping, FLOP counting, peaks, planted faces.

No timing here: the benchmark measures speed, these tests only check its arithmetic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench import flops
from bench.planted import encode_faces, face_box, plant, planted
from bench.sweep import face_layout, parse_batch_sizes, speedups, summarize
from processor.engine import detect
from processor.engine.background import plan_windows


def test_batch_sizes_are_sorted_distinct_and_positive() -> None:
    assert parse_batch_sizes("4,1,2,2") == [1, 2, 4]
    for bad in ("", "0,1", "1,x"):
        with pytest.raises(ValueError):
            parse_batch_sizes(bad)


@pytest.mark.parametrize("size,faces", [(128, 1), (128, 4), (1024, 4), (96, 3)])
def test_faces_are_laid_out_apart_inside_the_picture(size: int, faces: int) -> None:
    layout = face_layout(size, faces)
    assert len(layout) == faces
    boxes = [face_box(points) for points in layout]
    for points in layout:
        assert points.min() >= 0 and points.max() <= size
        assert np.linalg.norm(points[0] - points[1]) >= 5  # the engine skips faces with closer eyes
    centres = [((x1 + x2) / 2, (y1 + y2) / 2) for x1, y1, x2, y2 in boxes]
    assert len(set(centres)) == faces


def _report(faces: int, **ms: float) -> dict:
    return {"faces_found": faces, "timings_ms": ms}


def test_summary_and_speedups_per_step() -> None:
    one = summarize(1, [2.0, 2.0], [_report(1, restore=1000.0, background=500.0)] * 2)
    four = summarize(4, [4.0], [_report(2, restore=500.0, background=400.0)] * 4)
    assert one["images"] == 2 and one["s_per_image"] == 2.0 and one["images_per_s"] == 0.5
    assert four["faces"] == 8 and four["faces_per_s"] == 2.0 and four["s_per_image"] == 1.0
    assert four["step_ms_per_image"] == {"restore": 500.0, "background": 400.0}
    speedups([four, one])
    assert four["speedup_base_batch"] == 1
    assert four["speedup"] == {"per_image": 2.0, "restore": 2.0, "background": 1.25}
    assert one["speedup"]["per_image"] == 1.0


@pytest.mark.parametrize("name,expected", [
    ("NVIDIA H200", "H200 SXM"),
    ("NVIDIA H200 NVL", "H200 NVL"),
    ("NVIDIA H100 80GB HBM3", "H100 SXM"),
    ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA A100-SXM4-80GB", "A100"),
    ("NVIDIA A10", "A10"),
    ("NVIDIA L4", "L4"),
    ("NVIDIA L40S", "L40S"),
    ("Tesla T4", "T4"),
    ("NVIDIA GeForce RTX 4090", None),
])
def test_device_names_find_their_data_sheet_row(name: str, expected: str | None) -> None:
    peak = flops.nominal_peak(name)
    assert (peak.name if peak else None) == expected


def test_data_sheet_rows_are_dense_and_ordered() -> None:
    for _, peak in flops.NOMINAL_PEAKS:
        assert peak.fp32 < peak.fp16
        if peak.tf32 is not None:
            assert peak.fp32 < peak.tf32 < peak.fp16
    h200 = flops.nominal_peak("NVIDIA H200")
    assert (h200.fp32, h200.tf32, h200.fp16) == (67.0, 494.7, 989.4)


def test_the_arithmetic_that_bounds_a_network() -> None:
    kind = flops.peak_kind
    assert kind(torch.float32, "cpu", tf32_convs=True, capability=(0, 0)) == "fp32"
    assert kind(torch.float16, "cuda", tf32_convs=True, capability=(9, 0)) == "fp16"
    assert kind(torch.float32, "cuda", tf32_convs=True, capability=(9, 0)) == "tf32"
    assert kind(torch.float32, "cuda", tf32_convs=False, capability=(9, 0)) == "fp32"
    assert kind(torch.float32, "cuda", tf32_convs=True, capability=(7, 5)) == "fp32"


def test_data_sheet_peak_is_preferred_and_measured_fills_gaps() -> None:
    t4 = flops.nominal_peak("Tesla T4")
    chosen = flops.choose_peaks({"background": "fp16", "restorer": "tf32"}, nominal=t4,
                                measured={"fp16": 50_000.0, "tf32": 7_000.0})
    assert chosen["background"] == flops.PeakChoice("fp16", 65_000.0, "nominal", 50_000.0)
    assert chosen["restorer"] == flops.PeakChoice("tf32", 7_000.0, "measured", 7_000.0)
    with pytest.raises(ValueError):
        flops.choose_peaks({"restorer": "tf32"}, nominal=t4, measured={})


def test_overall_efficiency_weights_each_network_by_its_own_peak() -> None:
    peaks = {"a": flops.PeakChoice("fp16", 100.0, "nominal", None),
             "b": flops.PeakChoice("tf32", 200.0, "nominal", None)}
    rows = flops.achieved({"a": 100e9, "b": 100e9}, {"a": 2.0, "b": 0.5}, peaks, wall_seconds=3.0)
    assert rows["a"] == {"gflop": 100.0, "gflops": 50.0, "pct_of_peak": 50.0}
    assert rows["b"] == {"gflop": 100.0, "gflops": 200.0, "pct_of_peak": 100.0}
    # At their peaks the two would need 1 s + 0.5 s of the 3 s the picture took.
    assert rows["overall"]["gflops"] == pytest.approx(66.667, abs=1e-3)
    assert rows["overall"]["pct_of_peak"] == 50.0
    assert math.isnan(flops.achieved({"a": 1e9}, {}, peaks, wall_seconds=1.0)["a"]["gflops"])


def test_peak_samples_keep_the_best_and_the_median() -> None:
    samples = [{"fp32": {"best": 60.0, "median": 50.0}}, {"fp32": {"best": 130.0, "median": 90.0}},
               {"fp32": {"best": 80.0, "median": 70.0}}]
    assert flops.merge_samples(samples) == {"fp32": {"best": 130.0, "median": 70.0, "samples": 3,
                                                     "worst_sample_best": 60.0}}


def test_background_windows_follow_the_engine_padding_and_plan() -> None:
    # 128 px + 10 of pre-padding, already even: the whole plane is one window.
    assert flops.background_windows(128, 128, tile=0, pad=192, multiple=2, pre_pad=10) == [(138, 138)]
    assert flops.background_windows(127, 99, tile=0, pad=192, multiple=2, pre_pad=10) == [(138, 110)]
    tiled = flops.background_windows(500, 300, tile=64, pad=96, multiple=1, pre_pad=10)
    assert tiled == [w.window[2:] for w in plan_windows(510, 310, tile=64, pad=96)]
    assert len(tiled) > 1


def test_detector_canvas_is_reduced_like_the_engine() -> None:
    assert flops.detector_canvas(1000, 800, max_side=2048) == (1000, 800)
    assert flops.detector_canvas(3000, 4096, max_side=2048) == (1500, 2048)


def test_cpu_estimate_reads_flags_and_clock(tmp_path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\ncpu MHz\t\t: 2500.000\nflags\t\t: fpu sse2 avx fma avx2\n")
    assert flops.cpu_nominal_estimate(2, info) == {"gflops": 160.0, "flops_per_cycle": 32, "mhz": 2500.0, "threads": 2}
    assert flops.cpu_nominal_estimate(2, tmp_path / "missing") is None


def test_flop_counts_match_the_stated_figures() -> None:
    counter = flops.NetworkFlops("x2plus", faces=True)
    # TESTING.md: GFPGAN v1.4 396 and ParseNet 469 GFLOP per 512 x 512 face.
    assert counter.restorer() / 1e9 == pytest.approx(396, rel=0.01)
    assert counter.parser() / 1e9 == pytest.approx(469, rel=0.01)
    # Convolutions only: the count is proportional to the pixels, for the detector and the background.
    assert counter.background(64, 64) == 4 * counter.background(32, 32)
    assert counter.detector(128, 128) == 4 * counter.detector(64, 64)


def test_planted_faces_decode_to_their_landmarks() -> None:
    height, width = 96, 160
    faces = [np.array([[50, 55], [78, 55], [64, 70], [53, 85], [75, 85]], np.float32),
             np.array([[110, 30], [130, 31], [120, 40], [112, 50], [128, 50]], np.float32)]
    priors = detect.anchors(height, width)
    assert len({face.anchor for face in encode_faces(faces, priors, width, height)}) == 2
    count = len(priors)
    conf = torch.zeros(2, count, 2)
    conf[..., 0] = 1.0  # every anchor says "background", as a random detector is made to
    loc, conf, marks = plant((torch.zeros(2, count, 4), conf, torch.zeros(2, count, 10)), faces,
                             height=height, width=width)
    for row in range(2):
        found = detect._decode(loc[row], conf[row], marks[row], torch.from_numpy(priors), width, height, 0.97, 0.4)
        got = sorted((f.landmarks for f in found), key=lambda points: points[0, 0])
        assert len(got) == 2
        for points, expected in zip(got, faces):
            np.testing.assert_allclose(points, expected, atol=1e-3)


def test_planting_wraps_the_forward_and_undoes_itself() -> None:
    class Fake(torch.nn.Module):
        def forward(self, x: torch.Tensor):
            count = len(detect.anchors(x.shape[2], x.shape[3]))
            conf = torch.zeros(x.shape[0], count, 2)
            conf[..., 0] = 1.0
            return torch.zeros(x.shape[0], count, 4), conf, torch.zeros(x.shape[0], count, 10)

    module = Fake()
    face = [np.array([[20, 25], [40, 25], [30, 35], [22, 45], [38, 45]], np.float32)]
    with planted(module, face):
        _, conf, _ = module(torch.zeros(3, 3, 64, 64))
    assert (conf[:, :, 1] == 1.0).sum() == 3  # one face in each of the three pictures
    _, conf, _ = module(torch.zeros(1, 3, 64, 64))
    assert conf[:, :, 1].sum() == 0
