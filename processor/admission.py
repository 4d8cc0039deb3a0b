"""Memory is bounded before it is spent: each image is sized from its header, refused when its
result is too large, and admitted only when its working set fits beside the images in flight.

Two limits, both checked after the object is fetched and before any pixel is decoded:

- ``MAX_OUTPUT_PIXELS``: the result's pixels (input pixels x upscale², as the engine sizes it).
  Larger fails at once with ``output_too_large`` and a reason naming the limit and the largest
  upscale that would fit. This bounds what one image can cost whatever the worker's memory.
- The worker's memory budget (``WORKER_MEMORY_BUDGET_MB``; by default 60 % of the host's or the
  container's memory, and on CUDA a second budget of 80 % of the device's). Each image's working
  set is estimated from its header (:func:`estimate`); the images in flight must fit in the budget
  together, so an image whose share does not fit yet waits, asynchronously and first come first
  served, with its lease renewed (the pipeline waits inside ``held_lease``). ``PREFETCH`` still
  caps the count; the budget caps the bytes.

On the CPU the network levels' untiled working set is large (Real-ESRGAN: ~3.5 KB per input
pixel, 43 GB for a 12 MP photo): an image at ``balanced`` or ``best`` without a ``tile`` that does
not fit the whole budget untiled gets the largest background tile that does (512, 256, 128 or 64
pixels, the sizes the engine's own out-of-memory back-off goes through). An image whose host
estimate still exceeds the whole budget fails at once with ``over_memory_budget``: running it
alone would still ask for more than the operator allowed, and the reason says what would fit (the
largest upscale, or a smaller image). The device budget never fails an image: the
engine halves its background tile when the device runs out of memory, so on the device the
estimate is clamped to the budget and such an image simply runs with the device to itself.

The working-set factors are measurements (bench/working_set.py; random weights, this CPU), not
guesses; they are rounded up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import sys
import traceback
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from photoenhance.contracts.failures import FailureCode
from photoenhance.contracts.options import EnhanceOptions, Quality
from photoenhance.settings import Settings
from processor.engine.allocator import keeps_large_buffers
from processor.engine.errors import OutputTooLarge
from processor.engine.header import ImageHeader, read_header
from processor.engine.resize import output_size
from processor.failures import PermanentFailure

__all__ = [
    "Admission",
    "Footprint",
    "MemoryBudget",
    "check_output",
    "GAMUT_BYTES_PER_PIXEL",
    "GAMUT_BYTES_PER_RESULT_SAMPLE",
    "default_budget",
    "estimate",
    "largest_upscale",
    "output_pixels",
]

log = logging.getLogger(__name__)

MIB = 1 << 20

#: ``fast``: peak bytes per byte of result samples (decode, resize, encode together). Measured
#: 2.4-3.3 for 8-bit input (JPEG output the most: Pillow holds RGB as 4 bytes a pixel) and
#: 6.3-7.2 for 16-bit (reduced to 8 bits through float32 for JPEG and WebP).
FAST_FACTOR = {1: 4.0, 2: 8.0}

#: An 8-bit colour input with an ICC profile wider than sRGB keeps what the conversion clipped,
#: int16 per channel per input pixel, and its result is converted into a second array before
#: encoding (processor/engine/colour.py): bytes per input pixel and per result sample. Whether the
#: profile is wide only shows after decoding, so every 8-bit colour input that embeds a profile is
#: charged (3000 x 3000 random P3 noise at upscale 2 peaked at 513 MB over its baseline, 349 MB
#: without a profile).
GAMUT_BYTES_PER_PIXEL = 6
GAMUT_BYTES_PER_RESULT_SAMPLE = 1

#: Network levels: bytes per input pixel of one RGB plane while Real-ESRGAN x2plus runs over it
#: (activations, float32), measured up to 3.2 KB at 384-512 pixels on the CPU (bench/working_set.py);
#: an alpha channel is a second plane.
NETWORK_BYTES_PER_PIXEL = 3600

#: Network levels: bytes per input pixel of one plane outside the network (float planes in and out).
PLANE_BYTES_PER_PIXEL = 64

#: Context around a background tile of x2plus (input pixels, each side), as the engine cuts windows.
TILE_CONTEXT = 192

#: ``best``: an allowance for face detection (on at most 2048 pixels a side), GFPGAN and ParseNet
#: at 512 x 512; not measured with real faces (random weights find none).
FACE_ALLOWANCE = 1536 * MIB

#: Background tiles tried, largest first, for a network level that does not fit untiled on the
#: CPU: the sizes the engine's own out-of-memory back-off goes through (Limits.oom_first_tile on).
TILE_CHOICES = (512, 256, 128, 64)

#: Windows per background forward (processor.engine.batch_steps.Limits): CPU, CUDA.
TILES_PER_FORWARD = {False: 4, True: 8}

#: Share of the host's memory, and of the device's, that the default budget takes.
HOST_SHARE = 0.6
DEVICE_SHARE = 0.8

#: After an image estimated at this many bytes or more, free heap memory goes back to the system
#: before the next image is admitted (see :func:`_return_free_memory`).
TRIM_ABOVE = 64 * MIB

#: Upscale steps tried when looking for the largest that fits (the option takes any float).
_UPSCALE_STEP = 0.01


@dataclass(frozen=True)
class Footprint:
    """Bytes one image is expected to hold at its peak: in host memory, and on the device."""

    host: int
    device: int = 0


# -- pure functions -------------------------------------------------------------------------------


def output_pixels(width: int, height: int, upscale: float) -> int:
    """Pixels of the result the engine makes of a ``width`` x ``height`` input."""
    out_w, out_h = output_size(width, height, upscale)
    return out_w * out_h


def largest_upscale(fits: Callable[[float], bool]) -> float | None:
    """The largest upscale from 4 down to 1 (in steps of 0.01) for which ``fits`` holds; None if none."""
    steps = round((4.0 - 1.0) / _UPSCALE_STEP)
    for i in range(steps + 1):
        upscale = round(4.0 - i * _UPSCALE_STEP, 2)
        if fits(upscale):
            return upscale
    return None


def check_output(header: ImageHeader, options: EnhanceOptions, max_output_pixels: int) -> None:
    """Raise :class:`OutputTooLarge` when the result would have more than ``max_output_pixels``."""
    width, height = header.width, header.height
    pixels = output_pixels(width, height, options.upscale)
    if pixels <= max_output_pixels:
        return
    out_w, out_h = output_size(width, height, options.upscale)
    best = largest_upscale(lambda u: output_pixels(width, height, u) <= max_output_pixels)
    advice = f"the largest upscale that fits is {best:g}" if best is not None else "no upscale fits this image"
    raise OutputTooLarge(
        f"the result would be {out_w}x{out_h} = {pixels / 1e6:.1f} megapixels (upscale {options.upscale:g}), "
        f"more than the limit of {max_output_pixels / 1e6:g} megapixels (MAX_OUTPUT_PIXELS); {advice}"
    )


def estimate(header: ImageHeader, options: EnhanceOptions, *, on_device: bool = False) -> Footprint:
    """The bytes ``header``'s image holds at its peak at ``options``' level and upscale.

    ``fast`` costs a multiple of the result's samples; the network levels add Real-ESRGAN's
    working set over the input (on the device when ``on_device``), bounded by the tile when one is
    set, and ``best`` an allowance for faces.
    """
    pixels = header.width * header.height
    result_samples = output_pixels(header.width, header.height, options.upscale) * header.channels
    host = result_samples * header.bytes_per_sample * FAST_FACTOR[header.bytes_per_sample]
    if header.has_profile and header.bytes_per_sample == 1 and header.channels >= 3:
        host += pixels * GAMUT_BYTES_PER_PIXEL + result_samples * GAMUT_BYTES_PER_RESULT_SAMPLE
    if options.quality is Quality.FAST:
        return Footprint(host=int(host))
    planes = 2 if header.channels == 4 else 1
    window = pixels
    if options.tile:
        window = min(pixels, TILES_PER_FORWARD[on_device] * (options.tile + 2 * TILE_CONTEXT) ** 2)
    network = planes * window * NETWORK_BYTES_PER_PIXEL
    if options.quality is Quality.BEST:
        network += FACE_ALLOWANCE
    host += planes * pixels * PLANE_BYTES_PER_PIXEL
    if on_device:
        return Footprint(host=int(host), device=int(network))
    return Footprint(host=int(host + network))


def default_budget(share: float = HOST_SHARE) -> int:
    """``share`` of the memory this process may use: the host's, or its cgroup's limit if lower."""
    limits = [_meminfo_total()]
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            limits.append(int(Path(path).read_text().strip()))  # "max" (no limit) is a ValueError
    return int(min(limit for limit in limits if limit > 0) * share)


def _meminfo_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("MemTotal missing from /proc/meminfo")


def _return_free_memory() -> None:
    """Hand the C heap's free memory back to the system (glibc's ``malloc_trim``).

    Pillow holds pictures in 16 MiB blocks, which glibc serves from the arena of the thread that
    asked, and keeps once freed: with one arena per I/O thread, four large images serialised by the
    budget still left four images' worth of resident memory behind (measured: 553 MiB of growth for
    four 6000 x 6000 results under a 500 MiB budget). Skipped where the allocator is tuned to keep
    large buffers for torch (processor.engine.allocator), which reuses them from one heap instead.
    """
    if keeps_large_buffers() or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _device_total(device: str) -> int:
    """Bytes of memory on a CUDA ``device``; 0 for anything else."""
    if not device.startswith("cuda"):
        return 0
    import torch  # only a worker whose engine runs on CUDA gets here, and it has torch loaded

    return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)


# -- the budget -----------------------------------------------------------------------------------


class MemoryBudget:
    """Bytes in use against a capacity, in host memory and optionally on a device; waiters are
    served first come, first served (a large image is not overtaken forever by small ones).

    ``host`` and ``device`` are capacities in bytes; ``device`` 0 means no device pool.
    """

    def __init__(self, host: int, device: int = 0) -> None:
        self.capacity = Footprint(host, device)
        self.in_use = Footprint(0, 0)
        self._waiters: deque[tuple[Footprint, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        """Images waiting for their share."""
        return len(self._waiters)

    def clamp(self, need: Footprint) -> Footprint:
        """``need`` with its device part cut to the device capacity (see the module docstring)."""
        return Footprint(need.host, min(need.device, self.capacity.device) if self.capacity.device else 0)

    async def acquire(self, need: Footprint) -> None:
        """Wait until ``need`` fits beside what is in use, then take it. ``need.host`` must not
        exceed the capacity (it would wait forever); :meth:`clamp` it first."""
        if need.host > self.capacity.host or need.device > self.capacity.device and self.capacity.device:
            raise ValueError(f"{need} can never fit in {self.capacity}")
        if not self._waiters and self._fits(need):
            self._take(need)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (need, future)
        self._waiters.append(entry)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(need)  # granted just as it was cancelled: give it back
            else:
                self._waiters.remove(entry)
                self._wake()  # the next in line may fit now
            raise

    def release(self, need: Footprint) -> None:
        """Give back what :meth:`acquire` took and admit whoever fits now."""
        self.in_use = Footprint(self.in_use.host - need.host, self.in_use.device - need.device)
        self._wake()

    def _fits(self, need: Footprint) -> bool:
        host_ok = self.in_use.host + need.host <= self.capacity.host
        device_ok = not self.capacity.device or self.in_use.device + need.device <= self.capacity.device
        return host_ok and device_ok

    def _take(self, need: Footprint) -> None:
        self.in_use = Footprint(self.in_use.host + need.host, self.in_use.device + need.device)

    def _wake(self) -> None:
        while self._waiters and self._fits(self._waiters[0][0]):
            need, future = self._waiters.popleft()
            self._take(need)
            future.set_result(None)


# -- what the pipeline uses -----------------------------------------------------------------------


class Slot:
    """One image's place in the budget, from :meth:`Admission.slot`; empty until :meth:`admit`."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self.held: Footprint | None = None

    async def admit(self, data: bytes, options: EnhanceOptions) -> EnhanceOptions:
        """Read ``data``'s header, refuse what is too large (``too_many_pixels``,
        ``output_too_large``, ``over_memory_budget``), then wait until the image's working set fits.

        Returns the options to enhance with: ``options``, or on the CPU, for a network level whose
        untiled working set exceeds the whole budget, the same with the largest background tile
        that fits (the engine would otherwise only find out by running out of memory)."""
        admission = self._admission
        settings = admission.settings
        header = await asyncio.get_running_loop().run_in_executor(
            admission.executor, partial(read_header, data, max_pixels=settings.max_input_pixels)
        )
        check_output(header, options, settings.max_output_pixels)
        tried = options
        options, need = admission.fitting(header, options)
        if need.host > admission.budget.capacity.host:
            raise PermanentFailure(FailureCode.OVER_MEMORY_BUDGET, admission.over_budget(header, tried, need))
        if options.tile != tried.tile:
            log.info("a %dx%d image at %s gets %d-pixel background tiles to fit the memory budget",
                     header.width, header.height, options.quality.value, options.tile)
        await admission.budget.acquire(need)
        self.held = need
        return options


class Admission:
    """The pipeline's gate: header checks and the worker's :class:`MemoryBudget`."""

    def __init__(self, settings: Settings, executor: Executor | None, budget: MemoryBudget, *,
                 on_device: bool = False) -> None:
        self.settings = settings
        self.executor = executor
        self.budget = budget
        self.on_device = on_device

    @classmethod
    def for_worker(
        cls, settings: Settings, executor: Executor | None, device: str = "cpu", *, engine_here: bool = True
    ) -> Admission:
        """The host budget from ``WORKER_MEMORY_BUDGET_MB`` (0: derived from the host), and on a
        CUDA ``device`` a device budget of :data:`DEVICE_SHARE` of its memory.

        ``engine_here=False``: the engine runs in an engine process, which plans its own device
        memory; this worker budgets only the host memory it holds (on a CUDA engine, the
        estimates without the network's working set).
        """
        host = settings.worker_memory_budget_mb * MIB if settings.worker_memory_budget_mb > 0 else default_budget()
        on_cuda = device.startswith("cuda")
        device_total = _device_total(device) if engine_here else 0
        device_budget = int(device_total * DEVICE_SHARE)
        log.info("memory budget: host %d MiB%s", host // MIB,
                 f", device {device_budget // MIB} MiB" if device_budget else "")
        return cls(settings, executor, MemoryBudget(host, device_budget), on_device=on_cuda)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        """A :class:`Slot` whose share is given back when the block ends."""
        slot = Slot(self)
        try:
            yield slot
        except BaseException as exc:
            # The traceback keeps the finished steps' frames, and with them their pixels, alive
            # past the release: drop their locals first (running frames are left alone).
            traceback.clear_frames(exc.__traceback__)
            raise
        finally:
            if slot.held is not None:
                if slot.held.host >= TRIM_ABOVE:
                    _return_free_memory()
                self.budget.release(slot.held)

    def fitting(self, header: ImageHeader, options: EnhanceOptions) -> tuple[EnhanceOptions, Footprint]:
        """``options`` and their footprint; on the CPU, when a network level does not fit the whole
        budget untiled, the largest of :data:`TILE_CHOICES` that does (if any)."""
        need = self.budget.clamp(estimate(header, options, on_device=self.on_device))
        capacity = self.budget.capacity.host
        if need.host <= capacity or self.on_device or options.quality is Quality.FAST or options.tile:
            return options, need
        for tile in TILE_CHOICES:
            tiled = EnhanceOptions.from_dict({**options.to_dict(), "tile": tile})
            tiled_need = self.budget.clamp(estimate(header, tiled, on_device=False))
            if tiled_need.host <= capacity:
                return tiled, tiled_need
        return options, need

    def over_budget(self, header: ImageHeader, options: EnhanceOptions, need: Footprint) -> str:
        """The reason given when one image alone needs more than the whole budget."""
        capacity = self.budget.capacity.host
        best = largest_upscale(lambda u: self.fitting(header, _at(options, u))[1].host <= capacity)
        advice = f"the largest upscale that fits is {best:g}" if best is not None else "send a smaller image"
        if options.quality is not Quality.FAST and not options.tile and not self.on_device:
            advice = f"even with {TILE_CHOICES[-1]}-pixel background tiles; {advice}"
        return (
            f"a {header.width}x{header.height} image at {options.quality.value} with upscale {options.upscale:g} "
            f"needs about {math.ceil(need.host / MIB)} MiB, more than this worker's whole memory budget of "
            f"{capacity // MIB} MiB (WORKER_MEMORY_BUDGET_MB); {advice}"
        )


def _at(options: EnhanceOptions, upscale: float) -> EnhanceOptions:
    return EnhanceOptions.from_dict({**options.to_dict(), "upscale": upscale})
