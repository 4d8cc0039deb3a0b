"""FLOPs of the engine's networks per image, the device's peak, and how close a run came to it.

Used by ``bench/engine.py`` for its efficiency figure:
``efficiency = (FLOPs per image / seconds per image) / peak FLOP/s``.

FLOPs are what ``torch.utils.flop_counter.FlopCounterMode`` counts: convolutions and matrix products
at 2 FLOPs per multiply-add. Elementwise work (activations, StyleGAN's noise and modulation, the
upsampling interpolations) is not counted, so the figures slightly understate the arithmetic done.
The networks are built on the ``meta`` device for counting: the counter needs only shapes, so
counting GFPGAN's 396 GFLOP takes milliseconds instead of a CPU forward of many seconds.

Peaks, in GFLOP/s:

* CUDA: NVIDIA's data-sheet peak for known devices (dense, i.e. half the "with sparsity" figure the
  sheets print), per arithmetic: float16 tensor cores for float16 networks; TF32 tensor cores for
  float32 convolutions when ``torch.backends.cudnn.allow_tf32`` is on (PyTorch's default) on
  compute capability 8.0 or newer, else plain float32 CUDA cores. A large measured matmul per
  arithmetic is reported beside it; unknown devices use the measured figure.
* CPU: a measured large float32 matmul (best of several, torch's thread count), since no data sheet
  states a CPU's sustained peak for this build; an estimate from cores, SIMD width and clock is
  reported beside it.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "NOMINAL_PEAKS",
    "NetworkFlops",
    "NominalPeak",
    "PeakChoice",
    "achieved",
    "as_dict",
    "background_windows",
    "choose_peaks",
    "cpu_nominal_estimate",
    "detector_canvas",
    "measure_matmul_peaks",
    "merge_samples",
    "nominal_peak",
    "peak_kind",
]


@dataclass(frozen=True)
class NominalPeak:
    """A GPU's dense peak from NVIDIA's data sheet, in TFLOP/s (2:4 sparsity not counted)."""

    #: Data-sheet name of the part.
    name: str
    #: float32 on CUDA cores (no tensor cores).
    fp32: float
    #: TF32 on tensor cores, dense; None where the part has no TF32.
    tf32: float | None
    #: float16 on tensor cores (float32 accumulate), dense.
    fp16: float


#: (pattern matched against ``torch.cuda.get_device_name()``, peak). First match wins, so the more
#: specific names (H200 NVL, H100 PCIe) precede the bare ones. Figures: NVIDIA data sheets; where a
#: sheet prints only the sparse tensor figure, the dense one is half of it.
NOMINAL_PEAKS: tuple[tuple[str, NominalPeak], ...] = (
    (r"H200\s*NVL", NominalPeak("H200 NVL", fp32=60.0, tf32=417.5, fp16=835.5)),
    (r"H200", NominalPeak("H200 SXM", fp32=67.0, tf32=494.7, fp16=989.4)),
    (r"H100\s*NVL", NominalPeak("H100 NVL", fp32=60.0, tf32=417.5, fp16=835.5)),
    (r"H100\s*PCIe", NominalPeak("H100 PCIe", fp32=51.0, tf32=378.0, fp16=756.5)),
    (r"H100", NominalPeak("H100 SXM", fp32=67.0, tf32=494.7, fp16=989.4)),
    (r"A100", NominalPeak("A100", fp32=19.5, tf32=156.0, fp16=312.0)),
    (r"L40S", NominalPeak("L40S", fp32=91.6, tf32=183.0, fp16=362.0)),
    (r"\bL4\b", NominalPeak("L4", fp32=30.3, tf32=60.0, fp16=121.0)),
    (r"\bA10\b", NominalPeak("A10", fp32=31.2, tf32=62.5, fp16=125.0)),
    (r"\bT4\b", NominalPeak("T4", fp32=8.1, tf32=None, fp16=65.0)),
)


def nominal_peak(device_name: str) -> NominalPeak | None:
    """The data-sheet peak of a CUDA device by its reported name, or None when it is not in the table."""
    for pattern, peak in NOMINAL_PEAKS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return peak
    return None


def peak_kind(dtype: torch.dtype, device_type: str, *, tf32_convs: bool, capability: tuple[int, int]) -> str:
    """Which arithmetic bounds a network: ``fp16``, ``tf32`` or ``fp32`` (see the module docstring)."""
    if device_type != "cuda":
        return "fp32"
    if dtype in (torch.float16, torch.bfloat16):
        return "fp16"
    if tf32_convs and capability >= (8, 0):
        return "tf32"
    return "fp32"


@dataclass(frozen=True)
class PeakChoice:
    """The peak one network is measured against."""

    kind: str
    gflops: float
    #: ``nominal`` (data sheet) or ``measured`` (matmul).
    source: str
    #: The measured matmul figure of the same arithmetic, for comparison (None if not measured).
    measured_gflops: float | None


def choose_peaks(
    kinds: Mapping[str, str], *, nominal: NominalPeak | None, measured: Mapping[str, float]
) -> dict[str, PeakChoice]:
    """The peak for each network: the data sheet's when the device is known, else the measured one."""
    chosen = {}
    for network, kind in kinds.items():
        sheet = getattr(nominal, kind, None) if nominal is not None else None
        if sheet is not None:
            chosen[network] = PeakChoice(kind, sheet * 1000.0, "nominal", measured.get(kind))
        elif kind in measured:
            chosen[network] = PeakChoice(kind, measured[kind], "measured", measured[kind])
        else:
            raise ValueError(f"no peak for {network}: {kind} is neither in the data sheet nor measured")
    return chosen


def achieved(flops: Mapping[str, float], seconds: Mapping[str, float], peaks: Mapping[str, PeakChoice],
             wall_seconds: float) -> dict[str, dict[str, float]]:
    """Achieved GFLOP/s and % of peak per network (its FLOPs over its step time) and overall.

    Overall divides all FLOPs by the wall time per image. Its "% of peak" is the time the networks
    would need at their peaks (each network's FLOPs over its own peak, summed) as a share of the wall
    time, which stays meaningful when networks run in different arithmetic (float16 and TF32 on CUDA).
    """
    rows: dict[str, dict[str, float]] = {}
    ideal_seconds = 0.0
    for network, count in flops.items():
        peak = peaks[network].gflops * 1e9
        ideal_seconds += count / peak
        step = seconds.get(network, 0.0)
        rate = count / step if step > 0 else math.nan
        rows[network] = {"gflop": round(count / 1e9, 3), "gflops": round(rate / 1e9, 3),
                         "pct_of_peak": round(100.0 * rate / peak, 3)}
    total = sum(flops.values())
    rate = total / wall_seconds if wall_seconds > 0 else math.nan
    rows["overall"] = {"gflop": round(total / 1e9, 3), "gflops": round(rate / 1e9, 3),
                       "pct_of_peak": round(100.0 * ideal_seconds / wall_seconds, 3) if wall_seconds > 0 else math.nan}
    return rows


# -- counting ---------------------------------------------------------------------------------


def _count(module: torch.nn.Module, call: Callable[[torch.nn.Module, torch.Tensor], object],
           shape: tuple[int, ...]) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        call(module, torch.empty(shape, device="meta"))
    return int(counter.get_total_flops())


class NetworkFlops:
    """FLOPs of one forward of each engine network for one image (batch 1), cached per input shape.

    FLOPs grow linearly with the batch, so per-image figures do not depend on the micro-batch size.
    """

    def __init__(self, background_key: str | None, *, faces: bool) -> None:
        from processor.engine import networks

        meta = torch.device("meta")
        with meta:
            self._background = networks.build_background(background_key).module.eval() if background_key else None
            self._restorer = networks.build_restorer().eval() if faces else None
            self._parser = networks.build_parser().eval() if faces else None
            self._detector = networks.build_detector(meta).eval() if faces else None
        self._cache: dict[tuple[str, tuple[int, ...]], int] = {}

    def _cached(self, name: str, module: torch.nn.Module | None, call, shape: tuple[int, ...]) -> int:
        if module is None:
            raise ValueError(f"the {name} was not built")
        key = (name, shape)
        if key not in self._cache:
            self._cache[key] = _count(module, call, shape)
        return self._cache[key]

    def restorer(self) -> int:
        """GFPGAN v1.4 on one 512 x 512 face."""
        return self._cached("restorer", self._restorer,
                            lambda m, x: m(x, return_rgb=False, randomize_noise=False), (1, 3, 512, 512))

    def parser(self) -> int:
        """ParseNet on one 512 x 512 restored face."""
        return self._cached("parser", self._parser, lambda m, x: m(x), (1, 3, 512, 512))

    def detector(self, height: int, width: int) -> int:
        """RetinaFace R50 on one canvas of ``height`` x ``width``."""
        return self._cached("detector", self._detector, lambda m, x: m(x), (1, 3, height, width))

    def background(self, height: int, width: int) -> int:
        """The background network on one window of ``height`` x ``width`` input pixels."""
        return self._cached("background", self._background, lambda m, x: m(x), (1, 3, height, width))


def background_windows(height: int, width: int, *, tile: int, pad: int, multiple: int,
                       pre_pad: int) -> list[tuple[int, int]]:
    """(height, width) of every window the engine feeds the background network for one plane.

    Mirrors :func:`processor.engine.background.upsample_planes`: reflect pre-padding on the right and
    bottom, padding up to ``multiple``, then :func:`~processor.engine.background.plan_windows`.
    """
    from processor.engine.background import plan_windows

    padded_h, padded_w = height + pre_pad, width + pre_pad
    padded_h += (-padded_h) % multiple
    padded_w += (-padded_w) % multiple
    return [w.window[2:] for w in plan_windows(padded_h, padded_w, tile=tile, pad=pad, multiple=multiple)]


def detector_canvas(height: int, width: int, *, max_side: int) -> tuple[int, int]:
    """(height, width) the detector sees: the picture, reduced when its long side exceeds ``max_side``.

    Mirrors ``Pipeline._detect_all``.
    """
    factor = max(height, width) / max_side
    if factor <= 1:
        return height, width
    return round(height / factor), round(width / factor)


# -- peaks --------------------------------------------------------------------------------------


def measure_matmul_peaks(device: torch.device, *, repeats: int = 5) -> dict[str, dict[str, float]]:
    """Best and median GFLOP/s of a large square matmul, per arithmetic the device offers.

    CPU: float32 at 2048 (big enough to be compute-bound, small enough to repeat under a second each
    on two cores). CUDA: float32 with TF32 off, TF32, and float16, at 8192. The best of ``repeats`` is
    the peak: on a shared machine the median mostly measures the neighbours.
    """
    if device.type == "cuda":
        kinds = {"fp32": (torch.float32, False), "tf32": (torch.float32, True), "fp16": (torch.float16, False)}
        size = 8192
    else:
        kinds = {"fp32": (torch.float32, False)}
        size = 2048
    found = {}
    previous = torch.backends.cuda.matmul.allow_tf32
    try:
        for kind, (dtype, tf32) in kinds.items():
            torch.backends.cuda.matmul.allow_tf32 = tf32
            a = torch.randn(size, size, device=device, dtype=dtype)
            b = torch.randn(size, size, device=device, dtype=dtype)
            rates = []
            for index in range(repeats + 1):
                _sync(device)
                started = time.perf_counter()
                torch.mm(a, b)
                _sync(device)
                if index:  # the first one pays for kernel selection and allocation
                    rates.append(2 * size ** 3 / (time.perf_counter() - started) / 1e9)
            rates.sort()
            found[kind] = {"best": round(rates[-1], 1), "median": round(rates[len(rates) // 2], 1)}
            del a, b
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return found


def merge_samples(samples: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Several :func:`measure_matmul_peaks` results in one: the best of the bests, the median of medians.

    On a shared CPU one sample may fall entirely in a busy spell; spreading samples over the run and
    keeping the best finds what the hardware gives when the neighbours let it.
    """
    merged = {}
    for kind in samples[0]:
        bests = sorted(sample[kind]["best"] for sample in samples)
        medians = sorted(sample[kind]["median"] for sample in samples)
        merged[kind] = {"best": bests[-1], "median": medians[len(medians) // 2], "samples": len(samples),
                        "worst_sample_best": bests[0]}
    return merged


def cpu_nominal_estimate(threads: int, cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, object] | None:
    """threads x float32 FLOPs per cycle x reported clock, or None where /proc/cpuinfo is unreadable.

    FLOPs per cycle assume two FMA units of the widest vector the CPU flags: 64 (AVX-512), 32 (AVX2
    with FMA), 8 (SSE). The clock is the one /proc/cpuinfo reports now, not the boost clock, so this
    is a rough figure shown beside the measured peak, never used as the denominator.
    """
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    listed = re.search(r"^flags\s*:\s*(.*)$", text, re.MULTILINE)
    flags = set(listed.group(1).split()) if listed else set()
    clocks = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", text, re.MULTILINE)]
    if not clocks:
        return None
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 8
    mhz = max(clocks)
    return {"gflops": round(threads * per_cycle * mhz / 1000.0, 1), "flops_per_cycle": per_cycle,
            "mhz": mhz, "threads": threads}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def as_dict(choice: PeakChoice) -> dict[str, object]:
    """A JSON-ready :class:`PeakChoice`."""
    return asdict(choice)
