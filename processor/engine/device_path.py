"""The device path: a micro-batch goes to the engine's device once and comes back once, as integers.

:class:`DevicePipeline` runs the same steps in the same order as :class:`~processor.engine.batch_steps.Pipeline`
(which it extends), but every step between the upload and the download is a torch operation on the
device: detection's input, the face warps, restoration, parsing, the soft mask, the tiled
background and the blend. Nothing per face goes through float64 NumPy. The same code runs on the
CPU device, where tests hold it to the reference path and the stock GFPGANer within 2 levels.

What stays on the host: decoding and encoding (the worker's I/O threads), the 5-point similarity
fit (a 5 x 2 LMedS fit in OpenCV), the reduced detection copy of pictures over 2048 px (INTER_AREA),
RetinaFace's box decoding and NMS (a few hundred boxes), and the Lanczos step when the requested
scale differs from the network's (pictures with alpha, grey or 16-bit pictures also finish their
background on the host; their paste-back still runs on the device).

Each network runs at its own precision (:mod:`processor.engine.precision`); a CUDA out-of-memory
in the face networks halves the faces per forward down to one, in the background the tile (as the
reference path does), and only then fails that image alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from photoenhance.contracts.options import Quality
from photoenhance.settings import Settings
from processor.engine import align, background, detect, device_ops, paste
from processor.engine.batch_steps import Pipeline, _is_out_of_memory, _Job
from processor.engine.device import resolve_device
from processor.engine.memory import limits_for_budget
from processor.engine.models import load_models
from processor.engine.precision import ROLES, allow_tf32, autocast, precision_dtype, resolve_precision
from processor.engine.resize import output_size
from processor.engine.transfer import download, upload

__all__ = ["DevicePipeline", "ENGINE_PATHS", "choose_path"]

log = logging.getLogger(__name__)

#: Values of the ENGINE_PATH setting.
ENGINE_PATHS = ("auto", "device", "reference")
#: Setting field holding each network's precision.
_PRECISION_FIELDS = {"detector": "precision_detector", "restorer": "precision_gfpgan",
                     "parser": "precision_parsenet", "background": "precision_background"}


def choose_path(setting: str, device: torch.device) -> str:
    """``device`` or ``reference`` from the ENGINE_PATH setting; ``auto`` is ``device`` on CUDA and
    ``reference`` on the CPU.

    On a GPU the float64 NumPy face steps would dominate, so the device path is the fast one there.
    On the CPU bench/engine.py ``--compare-paths`` found the two paths even at ``best`` (the
    networks dominate; ratio 1.02, docs/BENCHMARKS.md) while the device path's own warps and
    paste-back cost more than OpenCV's, and the reference path is exact to the float64 reference:
    it stays the CPU's default, and ``device`` remains selectable there (the tests run it on the CPU).
    """
    choice = (setting or "auto").strip().lower()
    if choice not in ENGINE_PATHS:
        raise ValueError(f"ENGINE_PATH must be one of {', '.join(ENGINE_PATHS)}, got {setting!r}")
    if choice == "auto":
        return "device" if device.type == "cuda" else "reference"
    return choice


@dataclass
class DevicePipeline(Pipeline):
    """:class:`Pipeline` with every step between one upload and one download on ``device``."""

    #: Precision of each network role (``fp32``, ``tf32``, ``bf16``, ``fp16``).
    precisions: dict[str, str] = field(default_factory=dict)
    #: Seconds spent compiling and warming up the networks at start-up (0 without compile).
    cold_start_s: float = 0.0

    @classmethod
    def build(cls, settings: Settings, qualities: frozenset[Quality], *, background: str | None = None) -> DevicePipeline:
        """Resolve device and precisions, load the models, size the limits from the memory budget."""
        device = resolve_device(settings.device)
        precisions = {role: resolve_precision(role, getattr(settings, _PRECISION_FIELDS[role]), device)
                      for role in ROLES}
        models = load_models(settings.weights_dir, qualities, device,
                             allow_custom=settings.allow_custom_weights, background=background)
        if models.background is not None:  # the background's weights are cast; the others autocast
            dtype = precision_dtype(precisions["background"])
            models.background.module.to(dtype=dtype, memory_format=torch.channels_last)
        if device.type == "cuda":
            allow_tf32(any(choice == "tf32" for choice in precisions.values()))
            torch.backends.cudnn.benchmark = settings.engine_cudnn_benchmark
        limits = limits_for_budget(device, settings.device_memory_budget_mb, precisions)
        pipeline = cls(device=device, qualities=qualities, models=models, limits=limits, precisions=precisions,
                       step_sync=settings.engine_step_sync)
        if settings.engine_compile != "off":
            from processor.engine.compile import compile_and_warm_up

            pipeline.cold_start_s = compile_and_warm_up(pipeline, settings.engine_compile)
        log.info("device path on %s: precisions %s, limits %s", device, precisions, limits)
        return pipeline

    # -- one copy in, one copy out ---------------------------------------------------------------

    def _networks(self, jobs: list[_Job]) -> None:
        self._each(jobs, "upload", self._upload)
        super()._networks(jobs)
        self._each(jobs, "download", self._download)

    def _upload(self, job: _Job) -> None:
        job.device_pixels = upload(job.request.image.pixels, self.device)

    def _download(self, job: _Job) -> None:
        pixels = job.pixels
        if isinstance(pixels, torch.Tensor):
            pixels = download(pixels, job.request.image.pixels.dtype)
        if job.wants_faces and job.request.image.pixels.shape[2] == 1:  # grey pictures were restored in colour
            pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)[:, :, None]
        job.pixels = pixels
        job.device_pixels = None

    def _face_canvas(self, job: _Job) -> torch.Tensor:
        """(1, 3, H, W) float32 RGB in 0-255 (alpha dropped, grey widened, 16 bits scaled)."""
        pixels = job.device_pixels
        rgb = pixels.repeat(1, 1, 3) if pixels.shape[2] == 1 else pixels[:, :, :3]
        canvas = rgb.permute(2, 0, 1).unsqueeze(0).to(torch.float32)
        if job.request.image.pixels.dtype == np.uint16:
            canvas = canvas.to(torch.float64) / 65535.0 * 255.0
        return canvas

    # -- detection -------------------------------------------------------------------------------

    def _detect_all(self, jobs: list[_Job]) -> None:
        canvases, factors = [], []
        for job in jobs:
            canvas = self._face_canvas(job).to(torch.float32).flip(1)  # BGR, as RetinaFace was trained
            height, width = canvas.shape[2:]
            factor = max(height, width) / self.limits.detect_max_side
            if factor > 1:  # a reduced copy, made as the reference path makes it
                host = np.ascontiguousarray(canvas[0].permute(1, 2, 0).cpu().numpy())
                size = (round(width / factor), round(height / factor))
                small = cv2.resize(host, size, interpolation=cv2.INTER_AREA)
                canvas = torch.from_numpy(small).permute(2, 0, 1).unsqueeze(0).to(self.device)
            canvases.append(canvas)
            factors.append(max(factor, 1.0))
        with autocast(self.precisions.get("detector", "fp32"), self.device):
            found = _detect_tensors(self.models.detector, canvases, self.limits.max_detect_batch)
        for job, faces, factor in zip(jobs, found, factors):
            job.faces = [detect.Face(tuple(v * factor for v in f.box), f.score, f.landmarks * factor)
                         if factor != 1 else f for f in faces]

    # -- faces -----------------------------------------------------------------------------------

    def _align(self, job: _Job) -> None:
        job.matrices = [align.align_matrix(face.landmarks) for face in job.faces]
        if not job.matrices:
            job.crops = torch.empty(0, 3, align.FACE_SIZE, align.FACE_SIZE, device=self.device)
            return
        crops = device_ops.warp_affine(self._face_canvas(job), job.matrices, align.FACE_SIZE, align.FACE_SIZE,
                                       border=device_ops.BORDER_GREY_RGB)
        if job.request.image.pixels.dtype != np.uint16:  # OpenCV's warp of an 8-bit canvas is 8-bit
            crops = crops.round_().clamp_(0, 255)
        job.crops = crops

    def _restore(self, jobs: list[_Job]) -> None:
        crops = torch.cat([job.crops for job in jobs])
        choice = self.precisions.get("restorer", "fp32")

        def forward(batch: torch.Tensor) -> torch.Tensor:
            x = (batch / 255.0 - 0.5) / 0.5
            with torch.no_grad(), autocast(choice, self.device):
                output, _ = self.models.restorer(x, return_rgb=False, randomize_noise=False)
            return ((output.float().clamp(-1, 1) + 1) / 2 * 255.0).round_()

        restored = _in_shrinking_chunks(forward, crops, self.limits.max_faces_per_forward, self.device, "restore")
        for job in jobs:
            count = len(job.crops)
            mine, restored = restored[:count], restored[count:]
            job.restored = _fidelity(mine, job.crops, job.options.fidelity)

    def _parse(self, jobs: list[_Job]) -> None:
        faces = torch.cat([job.restored for job in jobs])
        choice = self.precisions.get("parser", "fp32")

        def forward(batch: torch.Tensor) -> torch.Tensor:
            x = (batch / 255.0 - 0.5) / 0.5
            with torch.no_grad(), autocast(choice, self.device):
                classes = self.models.parser(x)[0].argmax(dim=1)
            return device_ops.mask_from_classes(classes)

        masks = _in_shrinking_chunks(forward, faces, self.limits.max_faces_per_forward, self.device, "parse")
        for job in jobs:
            count = len(job.restored)
            job.masks, masks = masks[:count], masks[count:]

    # -- background ------------------------------------------------------------------------------

    def _background(self, jobs: list[_Job]) -> None:
        """Upsample all backgrounds on the device, halving the tile after each out-of-memory error."""
        net = self.models.background
        for job in jobs:
            job.tile = job.options.tile
        dtype = precision_dtype(self.precisions.get("background", "fp32"))
        while True:
            planes, owners = [], []
            for job in jobs:
                for plane in _device_planes(job.device_pixels, job.request.image.pixels.dtype):
                    planes.append(plane)
                    owners.append(job)
            try:
                outputs = upsample_tensors(net, planes, tiles=[job.tile for job in owners], pad=self.limits.tile_pad,
                                           max_batch=self.limits.max_tiles_per_forward, dtype=dtype)
                break
            except RuntimeError as exc:
                if not _is_out_of_memory(exc):
                    raise
                self._back_off(jobs, exc)
        for job in jobs:
            mine = [out for out, owner in zip(outputs, owners) if owner is job]
            job.pixels = self._finish(job, mine)

    def _finish(self, job: _Job, outputs: list[torch.Tensor]) -> torch.Tensor | np.ndarray:
        """The background in the output's integer values: on the device for 8-bit RGB at the
        network's own scale (the common case), else through the reference's host finish."""
        image = job.request.image
        size = output_size(image.width, image.height, job.options.upscale)
        channels = 3 if job.wants_faces and image.pixels.shape[2] == 1 else image.pixels.shape[2]
        colour = outputs[0]
        if channels == 3 and image.pixels.dtype == np.uint8 and size == (colour.shape[2], colour.shape[1]):
            return (colour * 255.0).round_().to(torch.uint8).permute(1, 2, 0)
        host = [out.permute(1, 2, 0).cpu().numpy() for out in outputs]
        return background.finish_planes(host, channels, image.pixels.dtype, size)

    # -- paste-back ------------------------------------------------------------------------------

    def _paste(self, job: _Job) -> None:
        pixels = job.pixels
        if isinstance(pixels, np.ndarray):
            pixels = upload(pixels, self.device)
        matrices = [align.paste_matrix(matrix, job.options.upscale) for matrix in job.matrices]
        gain = 257.0 if job.request.image.pixels.dtype == np.uint16 else 1.0
        job.pixels = paste_on_device(pixels, job.restored, job.masks, matrices, gain=gain)


# -- pure device steps ------------------------------------------------------------------------------


def _detect_tensors(detector: torch.nn.Module, canvases: Sequence[torch.Tensor], max_batch: int) -> list[list[detect.Face]]:
    """:func:`processor.engine.detect.detect_faces` for (1, 3, H, W) BGR float canvases already on the device."""
    found: list[list[detect.Face]] = [[] for _ in canvases]
    by_shape: dict[tuple[int, int], list[int]] = {}
    for index, canvas in enumerate(canvases):
        by_shape.setdefault(tuple(canvas.shape[2:]), []).append(index)
    for (height, width), indices in by_shape.items():
        device = canvases[indices[0]].device
        mean = torch.tensor(detect._BGR_MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        priors = torch.from_numpy(detect.anchors(height, width)).to(device)
        for start in range(0, len(indices), max_batch):
            chunk = indices[start:start + max_batch]
            with torch.no_grad():
                x = torch.cat([canvases[i] for i in chunk]) - mean
                loc, conf, marks = (t.float() for t in detector(x))
            for row, index in enumerate(chunk):
                found[index] = detect._decode(loc[row], conf[row], marks[row], priors, width, height, 0.97, 0.4)
    return found


def _fidelity(restored: torch.Tensor, aligned: torch.Tensor, fidelity: float) -> torch.Tensor:
    """:func:`processor.engine.restore.apply_fidelity` on the device."""
    if fidelity >= 1.0:
        return restored
    aligned8 = aligned.round().clamp(0, 255)
    if fidelity <= 0.0:
        return aligned8.clone()
    return (fidelity * restored + (1.0 - fidelity) * aligned8).round_().clamp_(0, 255)


def _in_shrinking_chunks(forward: Callable[[torch.Tensor], torch.Tensor], items: torch.Tensor, max_batch: int,
                         device: torch.device, name: str) -> torch.Tensor:
    """``forward`` over ``items`` in chunks of ``max_batch``; after an out-of-memory error the chunk is
    halved and retried, down to one item (then the error goes to the caller, which isolates the image)."""
    outputs, start, size = [], 0, max(1, max_batch)
    while start < len(items):
        try:
            outputs.append(forward(items[start:start + size]))
            start += size
        except RuntimeError as exc:
            if not _is_out_of_memory(exc) or size == 1:
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            size //= 2
            log.warning("%s out of memory; retrying with %s faces per forward", name, size)
    return torch.cat(outputs) if outputs else items.new_empty((0,) + tuple(items.shape[1:]))


def _device_planes(pixels: torch.Tensor, dtype: np.dtype) -> list[torch.Tensor]:
    """:func:`processor.engine.background.prepare_planes` on the device: (3, H, W) float32 in [0, 1]."""
    top = 65535.0 if dtype == np.uint16 else 255.0
    values = pixels.permute(2, 0, 1).to(torch.float32) / top
    if values.shape[0] == 1:
        return [values.repeat(3, 1, 1)]
    planes = [values[:3]]
    if values.shape[0] == 4:
        planes.append(values[3:4].repeat(3, 1, 1))
    return planes


def upsample_tensors(
    net: Any, planes: Sequence[torch.Tensor], *, tiles: Sequence[int], pad: int | None = None,
    pre_pad: int = background.PRE_PAD, max_batch: int = 4, dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor]:
    """:func:`processor.engine.background.upsample_planes` for (3, H, W) planes on the device; returns
    (3, H*s, W*s) float32 tensors clamped to [0, 1], on the device."""
    pad = net.context if pad is None else pad
    padded = [_pad_tensor(plane, net.multiple, pre_pad) for plane in planes]
    plans = [background.plan_windows(x.shape[2], x.shape[3], tile=tile, pad=pad, multiple=net.multiple)
             for x, tile in zip(padded, tiles)]
    outputs = [torch.zeros(3, x.shape[2] * net.scale, x.shape[3] * net.scale, device=x.device) for x in padded]
    by_shape: dict[tuple[int, int], list[tuple[int, background.Window]]] = {}
    for index, plan in enumerate(plans):
        for window in plan:
            by_shape.setdefault(window.window[2:], []).append((index, window))
    for windows in by_shape.values():
        for start in range(0, len(windows), max_batch):
            chunk = windows[start:start + max_batch]
            batch = torch.stack([background._crop(padded[i], window) for i, window in chunk])
            x = batch.to(dtype=dtype).contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                result = net.module(x).float()
            for (index, window), tile_out in zip(chunk, result):
                background.assemble(outputs[index], tile_out, window, net.scale)
    return [out[:, :plane.shape[1] * net.scale, :plane.shape[2] * net.scale].clamp_(0, 1)
            for out, plane in zip(outputs, planes)]


def _pad_tensor(plane: torch.Tensor, multiple: int, pre_pad: int) -> torch.Tensor:
    x = plane.unsqueeze(0)
    if pre_pad:
        x = torch.nn.functional.pad(x, (0, pre_pad, 0, pre_pad), "reflect")
    if multiple > 1:
        height, width = x.shape[2:]
        x = torch.nn.functional.pad(x, (0, (-width) % multiple, 0, (-height) % multiple), "reflect")
    return x


def paste_on_device(
    pixels: torch.Tensor, faces: torch.Tensor, masks: torch.Tensor, matrices: Sequence[np.ndarray], *, gain: float = 1.0
) -> torch.Tensor:
    """:func:`processor.engine.paste.paste_faces` on the device.

    ``pixels`` (H, W, C) integer tensor (uint8, or int32 holding 16-bit values), ``faces`` (N, 3,
    512, 512) RGB 0-255 integer-valued, ``masks`` (N, 1, 512, 512) in [0, 1]. Each group of
    overlapping face footprints is blended in float32, in order, and truncated once, as the reference.
    """
    out = pixels.clone()
    height, width = out.shape[:2]
    placed = [(paste.face_footprint(m, height, width), i, m) for i, m in enumerate(matrices)]
    for region, group in paste._overlap_groups([p for p in placed if p[0] is not None]):
        x0, y0, x1, y1 = region
        canvas = out[y0:y1, x0:x1, :3].permute(2, 0, 1).unsqueeze(0).to(torch.float32)
        for _, index, matrix in group:
            shifted = matrix.copy()
            shifted[:, 2] -= (x0, y0)
            warped = device_ops.warp_affine(faces[index:index + 1], [shifted], y1 - y0, x1 - x0)
            warped = warped.round_().clamp_(0, 255) * gain  # OpenCV's warp of an 8-bit face is 8-bit
            soft = device_ops.warp_affine(masks[index:index + 1], [matrix], y1 - y0, x1 - x0,
                                          origin=(x0, y0), fixed_point=True)
            canvas = soft * warped + (1 - soft) * canvas
        out[y0:y1, x0:x1, :3] = canvas[0].permute(1, 2, 0).to(out.dtype)
    return out

