"""Runs one micro-batch through the steps its quality levels need, isolating each image's failures.

The steps are pure functions in their own modules (detect, align, restore, background, paste); this
module orders them, hands each step the work of all images at once so the networks see batches,
times the steps, and turns one image's failure into that image's result slot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from photoenhance.contracts.options import Quality
from photoenhance.settings import Settings
from processor.engine import align, background, detect, paste, restore
from processor.engine.device import resolve_device
from processor.engine.errors import ImageError, ProcessingFailed, as_image_error, guard, not_loaded
from processor.engine.fast import fast_result
from processor.engine.models import Models, load_models
from processor.engine.precision import dtype_for
from processor.engine.records import EnhanceRequest, EnhanceResult, report_for
from processor.engine.resize import output_size

__all__ = ["Limits", "Pipeline"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """Batch sizes and tiling knobs, chosen per device."""

    #: Faces per GFPGAN / ParseNet forward.
    max_faces_per_forward: int = 4
    #: Background windows per Real-ESRGAN forward.
    max_tiles_per_forward: int = 4
    #: Images per detector forward (only images of equal size share one).
    max_detect_batch: int = 4
    #: Context around each background tile, input pixels; None takes the network's own.
    tile_pad: int | None = None
    #: First tile edge tried when an untiled background runs out of memory.
    oom_first_tile: int = 512
    #: Smallest tile edge before giving up on an image.
    oom_min_tile: int = 64
    #: Long side above which faces are detected on a reduced copy (full-size R50 would need GBs).
    detect_max_side: int = 2048

    @classmethod
    def for_device(cls, device: torch.device) -> Limits:
        """Bigger forwards on a GPU (where batching pays), small ones on the CPU (where it does not:
        bench/engine.py on 2 cores, one 512 x 512 face per forward ran 1.3-1.7x faster per face than
        four, whose activations no longer fit the caches; background tiles still gain at 4)."""
        if device.type == "cuda":
            return cls(max_faces_per_forward=16, max_tiles_per_forward=8, max_detect_batch=8)
        return cls(max_faces_per_forward=1)


@dataclass
class _Job:
    """One image's state through the steps."""

    index: int
    request: EnhanceRequest
    timings: dict[str, float] = field(default_factory=dict)
    faces: list[detect.Face] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    matrices: list[np.ndarray] = field(default_factory=list)
    restored: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    pixels: np.ndarray | None = None
    tile: int = 0
    error: ImageError | None = None
    #: The picture on the engine's device (the device path only).
    device_pixels: Any = None

    @property
    def options(self) -> Any:
        return self.request.options

    @property
    def wants_faces(self) -> bool:
        return self.request.options.quality is Quality.BEST


@dataclass
class Pipeline:
    """The loaded models and device, and the order of steps for each quality level."""

    device: torch.device
    qualities: frozenset[Quality]
    models: Models = field(default_factory=Models)
    limits: Limits = field(default_factory=Limits)
    #: Wait for the device around each step, so step times are the device's (ENGINE_STEP_SYNC).
    step_sync: bool = False

    @classmethod
    def build(cls, settings: Settings, qualities: frozenset[Quality], *, background: str | None = None) -> Pipeline:
        """Resolve the device and load the models ``qualities`` need (see :func:`models.load_models`)."""
        device = resolve_device(settings.device)
        models = load_models(settings.weights_dir, qualities, device,
                             allow_custom=settings.allow_custom_weights, background=background)
        return cls(device=device, qualities=qualities, models=models, limits=Limits.for_device(device),
                   step_sync=settings.engine_step_sync)

    def run(self, requests: Sequence[EnhanceRequest]) -> list[EnhanceResult | ImageError]:
        """Enhance a micro-batch; never raises for one image's fault."""
        results: list[EnhanceResult | ImageError | None] = [None] * len(requests)
        jobs: list[_Job] = []
        for index, request in enumerate(requests):
            quality = request.options.quality
            if quality not in self.qualities:
                results[index] = not_loaded(quality, self.qualities)
            elif quality is Quality.FAST:
                results[index] = guard(lambda r=request: fast_result(r, str(self.device)))
            else:
                jobs.append(_Job(index, request))
        if jobs:
            self._networks(jobs)
            for job in jobs:
                results[job.index] = job.error or self._result(job)
        return [r if r is not None else ProcessingFailed("the image was not processed") for r in results]

    def release(self) -> None:
        """Drop the models so their memory can be freed."""
        self.models.release()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- the network levels -----------------------------------------------------------------

    def _networks(self, jobs: list[_Job]) -> None:
        """``balanced`` and ``best``: faces (best only), then every background, then paste-back."""
        face_jobs = [job for job in jobs if job.wants_faces]
        if face_jobs:
            self._detect(face_jobs)
            self._each(face_jobs, "align", self._align)
            self._shared(face_jobs, "restore", self._restore, weight=lambda job: len(job.crops))
            self._shared(face_jobs, "parse", self._parse, weight=lambda job: len(job.restored))
        self._shared(jobs, "background", self._background, weight=lambda job: job.request.image.pixels.size)
        self._each(face_jobs, "paste", self._paste)

    # -- steps over all images --------------------------------------------------------------

    def _detect(self, jobs: list[_Job]) -> None:
        given = [job for job in jobs if job.request.faces is not None]
        self._each(given, "detect", lambda job: setattr(
            job, "faces", [detect.Face.from_landmarks(points) for points in job.request.faces or ()]))
        to_detect = [job for job in jobs if job.request.faces is None and job.error is None]
        if to_detect:
            self._shared(to_detect, "detect", self._detect_all, weight=lambda job: 1)
        for job in jobs:
            if job.error is None:
                image = job.request.image
                job.faces = detect.select_faces(job.faces, image.height, image.width,
                                                only_center_face=job.options.only_center_face)

    def _detect_all(self, jobs: list[_Job]) -> None:
        canvases, factors = [], []
        for job in jobs:
            canvas = detect.to_face_canvas(job.request.image.pixels)
            factor = max(canvas.shape[:2]) / self.limits.detect_max_side
            if factor > 1:  # detect on a reduced copy, then scale boxes and landmarks back
                size = (round(canvas.shape[1] / factor), round(canvas.shape[0] / factor))
                canvas = cv2.resize(canvas, size, interpolation=cv2.INTER_AREA)
            canvases.append(canvas)
            factors.append(max(factor, 1.0))
        found = detect.detect_faces(self.models.detector, canvases, self.device,
                                    max_batch=self.limits.max_detect_batch)
        for job, faces, factor in zip(jobs, found, factors):
            job.faces = [detect.Face(tuple(v * factor for v in f.box), f.score, f.landmarks * factor)
                         if factor != 1 else f for f in faces]

    def _align(self, job: _Job) -> None:
        canvas = detect.to_face_canvas(job.request.image.pixels)
        job.matrices = [align.align_matrix(face.landmarks) for face in job.faces]
        job.crops = [align.warp_face(canvas, matrix) for matrix in job.matrices]

    def _restore(self, jobs: list[_Job]) -> None:
        crops = [crop for job in jobs for crop in job.crops]
        restored = restore.restore_faces(self.models.restorer, crops, self.device,
                                         max_batch=self.limits.max_faces_per_forward,
                                         dtype=dtype_for("restorer", self.device))
        for job in jobs:
            mine, restored = restored[:len(job.crops)], restored[len(job.crops):]
            job.restored = [restore.apply_fidelity(face, crop, job.options.fidelity)
                            for face, crop in zip(mine, job.crops)]

    def _parse(self, jobs: list[_Job]) -> None:
        faces = [face for job in jobs for face in job.restored]
        masks = paste.parse_faces(self.models.parser, faces, self.device,
                                  max_batch=self.limits.max_faces_per_forward)
        for job in jobs:
            job.masks, masks = masks[:len(job.restored)], masks[len(job.restored):]

    def _background(self, jobs: list[_Job]) -> None:
        """Upsample all backgrounds together, halving the tile after each out-of-memory error."""
        net = self.models.background
        for job in jobs:
            job.tile = job.options.tile
        while True:
            planes, owners = [], []
            for job in jobs:
                for plane in background.prepare_planes(job.request.image.pixels):
                    planes.append(plane)
                    owners.append(job)
            try:
                outputs = background.upsample_planes(
                    net, planes, self.device, tiles=[job.tile for job in owners], pad=self.limits.tile_pad,
                    max_batch=self.limits.max_tiles_per_forward, dtype=dtype_for("background", self.device))
                break
            except RuntimeError as exc:
                if not _is_out_of_memory(exc):
                    raise
                self._back_off(jobs, exc)
        for job in jobs:
            mine = [out for out, owner in zip(outputs, owners) if owner is job]
            image = job.request.image
            channels = 3 if job.wants_faces and image.pixels.shape[2] == 1 else image.pixels.shape[2]
            size = output_size(image.width, image.height, job.options.upscale)
            job.pixels = background.finish_planes(mine, channels, image.pixels.dtype, size)

    def _back_off(self, jobs: list[_Job], exc: Exception) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        for job in jobs:
            job.tile = job.tile // 2 if job.tile else self.limits.oom_first_tile
        smallest = min(job.tile for job in jobs)
        if smallest < self.limits.oom_min_tile:
            raise ProcessingFailed(f"out of memory even with {smallest * 2}-pixel background tiles") from exc
        log.warning("background out of memory; retrying with tiles of %s pixels", smallest)

    def _paste(self, job: _Job) -> None:
        upscale = job.options.upscale
        matrices = [align.paste_matrix(matrix, upscale) for matrix in job.matrices]
        pixels = paste.paste_faces(job.pixels, job.restored, job.masks, matrices)
        if job.request.image.pixels.shape[2] == 1:  # grey pictures were restored in colour
            pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)[:, :, None]
        job.pixels = pixels

    # -- bookkeeping ------------------------------------------------------------------------

    def _shared(self, jobs: list[_Job], name: str, step: Callable[[list[_Job]], None],
                *, weight: Callable[[_Job], float]) -> None:
        """Run a batched step over the live jobs; if it fails, retry image by image to find the culprit."""
        live = [job for job in jobs if job.error is None]
        if not live:
            return
        started = self._clock()
        try:
            step(live)
        except Exception as exc:  # noqa: BLE001 - isolate, then report per image
            if len(live) == 1:
                live[0].error = as_image_error(exc, name)
            else:
                log.warning("batched %s failed (%s); retrying image by image", name, exc)
                for job in live:
                    self._shared([job], name, step, weight=weight)
                return
        _charge(live, name, self._ms(started), [weight(job) for job in live])

    def _each(self, jobs: list[_Job], name: str, step: Callable[[_Job], None]) -> None:
        """Run a per-image step on every live job, timing each and isolating its failure."""
        for job in jobs:
            if job.error is not None:
                continue
            started = self._clock()
            try:
                step(job)
            except Exception as exc:  # noqa: BLE001 - one image's failure is that image's result
                job.error = as_image_error(exc, name)
            job.timings[name] = self._ms(started)

    def _clock(self) -> float:
        """The time a step starts; with ``step_sync``, once the device has done all queued work."""
        if self.step_sync and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _ms(self, started: float) -> float:
        """Milliseconds since ``started`` (:meth:`_clock`), the device's queued work included with ``step_sync``."""
        return round((self._clock() - started) * 1000.0, 3)

    def _result(self, job: _Job) -> EnhanceResult:
        pixels = job.pixels
        report = report_for(job.request, pixels, timings=job.timings, device=str(self.device), faces=job.faces)
        if self.models.background is not None:
            report["background_model"] = self.models.background.key
            report["tile"] = job.tile
        return EnhanceResult(pixels, report)


def _charge(jobs: list[_Job], name: str, total_ms: float, weights: list[float]) -> None:
    """Split a shared step's time among the images by their share of its work."""
    total_weight = sum(weights) or len(jobs)
    for job, w in zip(jobs, weights):
        job.timings[name] = round(total_ms * ((w or 0) if sum(weights) else 1) / total_weight, 3)


def _is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in text or "can't allocate" in text
