"""processor/admission.py: sizing an image from its header, the output limit, and the memory budget
the images in flight share (the real worker's peak memory is in tests/security/test_memory_bounds.py)."""

from __future__ import annotations

import asyncio
import io
import re
import zlib
from dataclasses import replace
from datetime import UTC
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from harness.bombs import png
from harness.pictures import display_p3_icc, heic_bytes
from photoenhance.contracts.options import EnhanceOptions
from photoenhance.settings import Settings
from processor.admission import (
    GAMUT_BYTES_PER_PIXEL,
    GAMUT_BYTES_PER_RESULT_SAMPLE,
    Admission,
    Footprint,
    MemoryBudget,
    check_output,
    estimate,
    largest_upscale,
    output_pixels,
)
from processor.engine.errors import OutputTooLarge, TooManyPixels
from processor.engine.header import ImageHeader, read_header
from processor.engine.imageio import decode_image
from processor.failures import PermanentFailure, classify

MIB = 1 << 20


def options(**values: object) -> EnhanceOptions:
    return EnhanceOptions.from_dict({"quality": "fast", **values})


def encoded(pixels: np.ndarray, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **params)
    return buffer.getvalue()


def png16(height: int, width: int, channels: int) -> bytes:
    ok, buffer = cv2.imencode(".png", np.zeros((height, width, channels), np.uint16))
    assert ok
    return buffer.tobytes()


def zeros_png(width: int, height: int) -> bytes:
    """An honest RGB PNG of zeros, compressed row by row (7071 x 7071 is ~150 KB)."""
    packer = zlib.compressobj(9)
    row = bytes(1 + 3 * width)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return png(width, height, body)


# -- the header ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (encoded(np.zeros((5, 7, 3), np.uint8), "JPEG"), ("jpeg", 7, 5, 3, 1)),
        (encoded(np.zeros((5, 7), np.uint8)), ("png", 7, 5, 1, 1)),
        (encoded(np.zeros((5, 7, 4), np.uint8)), ("png", 7, 5, 4, 1)),
        (encoded(np.zeros((5, 7, 3), np.uint8), "WEBP"), ("webp", 7, 5, 3, 1)),
        (png16(5, 7, 3), ("png", 7, 5, 3, 2)),
        (png16(5, 7, 4), ("png", 7, 5, 4, 2)),
        (png16(5, 7, 1), ("png", 7, 5, 1, 2)),
    ],
)
def test_the_header_announces_the_layout_decoding_gives(data: bytes, expected: tuple) -> None:
    header = read_header(data, max_pixels=10**6)
    assert (header.format, header.width, header.height, header.channels, header.bytes_per_sample) == expected
    decoded = decode_image(data, max_pixels=10**6)
    assert decoded.pixels.shape == (header.height, header.width, header.channels)
    assert decoded.pixels.dtype.itemsize == header.bytes_per_sample


def test_the_header_of_a_small_file_claiming_50_megapixels_is_read_without_decoding() -> None:
    data = zeros_png(7071, 7071)
    assert len(data) < 200_000
    header = read_header(data, max_pixels=50_000_000)
    assert (header.width, header.height, header.channels) == (7071, 7071, 3)
    with pytest.raises(TooManyPixels):
        read_header(data, max_pixels=7071 * 7071 - 1)


# -- the output limit ------------------------------------------------------------------------------
def test_the_attacks_upscale_is_refused_with_the_limit_and_the_largest_upscale_that_fits() -> None:
    header = ImageHeader("png", 7071, 7071, 3, 8)
    with pytest.raises(OutputTooLarge) as refused:
        check_output(header, options(upscale=4), 64_000_000)
    reason = refused.value.reason
    assert refused.value.code == "output_too_large"
    assert "28284x28284" in reason and "64 megapixels (MAX_OUTPUT_PIXELS)" in reason
    assert "the largest upscale that fits is 1.13" in reason
    assert output_pixels(7071, 7071, 1.13) <= 64_000_000 < output_pixels(7071, 7071, 1.14)
    check_output(header, options(upscale=1.13), 64_000_000)


def test_a_phone_photo_at_upscale_2_and_every_accepted_input_at_1_pass_the_default() -> None:
    limit = Settings.from_env(environ={}).max_output_pixels
    check_output(ImageHeader("jpeg", 4032, 3024, 3, 8), options(upscale=2), limit)
    biggest = Settings.from_env(environ={}).max_input_pixels
    check_output(ImageHeader("png", biggest, 1, 3, 8), options(upscale=1), limit)


def test_no_upscale_fits_when_even_the_input_is_larger_than_the_limit() -> None:
    with pytest.raises(OutputTooLarge, match="no upscale fits"):
        check_output(ImageHeader("png", 100, 100, 3, 8), options(upscale=1), 9_999)
    assert largest_upscale(lambda u: False) is None
    assert largest_upscale(lambda u: True) == 4.0


# -- the estimate ----------------------------------------------------------------------------------
def test_the_estimate_grows_with_upscale_squared_channels_and_depth() -> None:
    rgb = ImageHeader("png", 1000, 1000, 3, 8)
    one, four = estimate(rgb, options(upscale=1)).host, estimate(rgb, options(upscale=4)).host
    assert four == 16 * one
    rgba16 = estimate(ImageHeader("png", 1000, 1000, 4, 16), options(upscale=4)).host
    assert rgba16 / four == pytest.approx(4 / 3 * 2 * 2)  # channels, bytes, float32 reduction to 8 bits
    # the attack: ~8 GB measured on main; the estimate must not be below it
    assert estimate(ImageHeader("png", 7071, 7071, 3, 8), options(upscale=4)).host > 7.5e9


def test_a_colour_image_with_a_profile_is_charged_for_the_colours_srgb_clips() -> None:
    """A profiled 8-bit colour input may keep a residual of what sRGB clips (processor/engine/colour.py);
    the header says whether a profile is there, so images without one are not charged for it."""
    picture = np.full((48, 64, 3), 120, np.uint8)
    profiled = [
        encoded(picture, "PNG", icc_profile=display_p3_icc()),
        encoded(picture, "JPEG", icc_profile=display_p3_icc()),
        heic_bytes(picture, icc_profile=display_p3_icc()),
    ]
    plain = [encoded(picture, "PNG"), encoded(picture, "JPEG"), heic_bytes(picture)]
    assert [read_header(d).has_profile for d in profiled] == [True, True, True]
    assert [read_header(d).has_profile for d in plain] == [False, False, False]
    bare = ImageHeader("jpeg", 1000, 1000, 3, 8)
    wide = ImageHeader("jpeg", 1000, 1000, 3, 8, has_profile=True)
    residual = 1000 * 1000 * GAMUT_BYTES_PER_PIXEL + 4_000_000 * 3 * GAMUT_BYTES_PER_RESULT_SAMPLE
    assert estimate(wide, options(upscale=2)).host - estimate(bare, options(upscale=2)).host == residual
    deep = ImageHeader("png", 1000, 1000, 3, 16)  # 16-bit samples keep their profile: no residual
    assert estimate(replace(deep, has_profile=True), options()).host == estimate(deep, options()).host


def test_network_levels_cost_their_working_set_bounded_by_the_tile() -> None:
    header = ImageHeader("jpeg", 2000, 2000, 3, 8)
    fast = estimate(header, options(upscale=2)).host
    untiled = estimate(header, options(quality="balanced", upscale=2)).host
    tiled = estimate(header, options(quality="balanced", upscale=2, tile=64)).host
    assert untiled > 10e9 > 4e9 > tiled > fast
    best = estimate(header, options(quality="best", upscale=2)).host
    assert best > untiled
    on_device = estimate(header, options(quality="balanced", upscale=2), on_device=True)
    assert on_device.device > 10e9 and on_device.host < 1e9


# -- the budget ------------------------------------------------------------------------------------
async def test_images_wait_their_turn_first_come_first_served() -> None:
    budget = MemoryBudget(100)
    await budget.acquire(Footprint(60))
    order: list[str] = []

    async def take(name: str, size: int) -> None:
        await budget.acquire(Footprint(size))
        order.append(name)

    big = asyncio.create_task(take("big", 90))
    await asyncio.sleep(0)
    small = asyncio.create_task(take("small", 10))  # would fit now, but must not overtake "big"
    await asyncio.sleep(0.01)
    assert order == [] and budget.waiting == 2
    budget.release(Footprint(60))
    await asyncio.wait_for(asyncio.gather(big, small), 1)
    assert order == ["big", "small"]
    assert budget.in_use == Footprint(100)


async def test_a_cancelled_waiter_takes_nothing_and_lets_the_next_in() -> None:
    budget = MemoryBudget(100)
    await budget.acquire(Footprint(50))
    first = asyncio.create_task(budget.acquire(Footprint(80)))
    second = asyncio.create_task(budget.acquire(Footprint(40)))
    await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.wait_for(second, 1)
    assert budget.in_use == Footprint(90) and budget.waiting == 0
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_the_device_pool_is_clamped_never_refused() -> None:
    budget = MemoryBudget(100, device=10)
    need = budget.clamp(Footprint(5, 50))
    assert need == Footprint(5, 10)
    await budget.acquire(need)
    waiting = asyncio.create_task(budget.acquire(Footprint(5, 1)))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    budget.release(need)
    await asyncio.wait_for(waiting, 1)


async def test_an_image_larger_than_the_whole_budget_fails_at_once_saying_what_fits() -> None:
    settings = Settings(max_output_pixels=10**9)
    admission = Admission(settings, None, MemoryBudget(200 * MIB))
    data = zeros_png(2000, 2000)  # 12 MB of samples; x4 at upscale 2, x16 at 4
    async with admission.slot() as slot:
        with pytest.raises(PermanentFailure) as refused:
            await slot.admit(data, options(upscale=4))
    failure = classify(refused.value)
    assert (failure.permanent, failure.code) == (True, "over_memory_budget")
    assert "200 MiB (WORKER_MEMORY_BUDGET_MB)" in failure.reason
    best = float(re.search(r"the largest upscale that fits is ([0-9.]+)$", failure.reason).group(1))
    header = read_header(data, max_pixels=10**8)
    assert estimate(header, options(upscale=best)).host <= 200 * MIB < estimate(header, options(upscale=best + 0.01)).host
    assert admission.budget.in_use == Footprint(0)
    async with admission.slot() as slot:
        await slot.admit(data, options(upscale=2))
        assert admission.budget.in_use.host == estimate(read_header(data, max_pixels=10**8), options(upscale=2)).host
    assert admission.budget.in_use == Footprint(0)


async def test_a_network_level_too_large_untiled_on_the_cpu_gets_the_largest_tile_that_fits() -> None:
    admission = Admission(Settings(), None, MemoryBudget(16 * 1024 * MIB))
    data = zeros_png(4000, 3000)  # a 12 MP photo: ~43 GB untiled
    async with admission.slot() as slot:
        chosen = await slot.admit(data, options(quality="balanced", upscale=2))
        assert chosen.tile == 512 and chosen.quality.value == "balanced" and chosen.upscale == 2
        header = read_header(data, max_pixels=10**8)
        assert estimate(header, options(quality="balanced", upscale=2)).host > 30e9
        assert admission.budget.in_use.host == estimate(header, chosen).host <= 16 * 1024 * MIB
    # a tile the client chose is kept, and fails when even that does not fit
    small = Admission(Settings(), None, MemoryBudget(4608 * MIB))
    async with small.slot() as slot:
        with pytest.raises(PermanentFailure, match="needs about"):
            await slot.admit(data, options(quality="balanced", upscale=2, tile=512))
        chosen = await slot.admit(data, options(quality="balanced", upscale=2))
        assert chosen.tile == 64


async def test_a_network_level_over_the_budget_even_with_the_smallest_tile_fails() -> None:
    admission = Admission(Settings(), None, MemoryBudget(1024 * MIB))
    async with admission.slot() as slot:
        with pytest.raises(PermanentFailure) as refused:
            await slot.admit(zeros_png(1000, 1000), options(quality="balanced", upscale=1))
    assert refused.value.code == "over_memory_budget"
    assert refused.value.reason.endswith("even with 64-pixel background tiles; send a smaller image")


def test_reading_the_header_decodes_no_pixel(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import ImageFile

    loads: list[str] = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self.format))
    for data in (zeros_png(300, 200), encoded(np.zeros((20, 30, 3), np.uint8), "JPEG"),
                 encoded(np.zeros((20, 30, 3), np.uint8), "WEBP")):
        read_header(data, max_pixels=10**6)
    assert loads == []


# -- in a worker -----------------------------------------------------------------------------------
@pytest.mark.objectstore
async def test_an_image_waiting_for_memory_keeps_its_lease_and_the_loop_free(
    processor_settings: Settings, repository: Any, fast_engine: Any
) -> None:
    """While the budget is full, an image waits past two leases without losing its claim or
    blocking the worker's event loop (/healthz answers); once memory is free it completes."""
    from datetime import datetime

    from harness.processor import eventually, image_bytes, put_async, running_worker
    from photoenhance.contracts.states import ImageState

    settings = processor_settings.replace(worker_memory_budget_mb=64, lease_seconds=3)
    async with running_worker(settings, fast_engine) as worker:
        budget = worker.pipeline.admission.budget
        everything = Footprint(budget.capacity.host)
        await budget.acquire(everything)  # another image holds all of it
        await put_async(settings, "waits/photo.jpg", image_bytes(seed=3), {"photoenhance-quality": "fast"})
        await eventually(lambda: asyncio.sleep(0, budget.waiting == 1), what="the image to wait for memory")
        waited_since = asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - waited_since < 2.5 * settings.lease_seconds:
            image = (await repository.batch_snapshot("waits")).images[0]
            assert image.state is ImageState.PROCESSING and image.lease_owner == worker.worker_id
            assert image.lease_expires_at.replace(tzinfo=UTC) > datetime.now(UTC)
            assert worker.status()["in_flight"] == 1
            await asyncio.sleep(0.5)
        budget.release(everything)

        async def completed() -> Any:
            image = (await repository.batch_snapshot("waits")).images[0]
            return image if image.state.is_final else None

        image = await eventually(completed, what="the image to complete")
        assert (image.state, image.attempts) == (ImageState.COMPLETED, 1), image.reason
        assert budget.in_use == Footprint(0, 0)


def test_the_default_budget_is_a_share_of_this_hosts_memory() -> None:
    total = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal:"))
    derived = Admission.for_worker(Settings(), None).budget.capacity
    assert 0 < derived.host <= 0.6 * total and derived.device == 0
    assert Admission.for_worker(Settings(worker_memory_budget_mb=300), None).budget.capacity == Footprint(300 * MIB, 0)
