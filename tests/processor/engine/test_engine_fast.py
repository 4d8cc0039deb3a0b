"""The ``fast`` level end to end: no weight files, Lanczos resize, one slot per request."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from photoenhance.contracts.options import EnhanceOptions, Quality
from photoenhance.settings import Settings
from processor.engine import ENGINE_VERSION, Engine, EnhanceRequest, EnhanceResult
from processor.engine.errors import EngineClosed, ImageError
from processor.engine.imageio import DecodedImage, decode_image
from processor.engine.resize import lanczos_resize, output_size

FAST = EnhanceOptions(quality=Quality.FAST, upscale=2.0)


def _image(height: int = 20, width: int = 30, channels: int = 3, dtype: type = np.uint8) -> DecodedImage:
    top = 65535 if dtype == np.uint16 else 255
    pixels = np.random.default_rng(height * width + channels).integers(0, top + 1, (height, width, channels)).astype(dtype)
    return DecodedImage(pixels, "png", width, height, channels == 4, 16 if dtype == np.uint16 else 8)


@pytest.fixture
def engine(tmp_path) -> Engine:
    # An empty weights folder: ``fast`` must start without any weight file.
    loaded = Engine.load(Settings(weights_dir=tmp_path, device="cpu"), qualities=[Quality.FAST])
    yield loaded
    loaded.close()


def test_output_size_truncates_like_the_reference() -> None:
    assert output_size(30, 20, 2.0) == (60, 40)
    assert output_size(33, 21, 1.5) == (49, 31)
    assert output_size(1, 1, 1.0) == (1, 1)


@pytest.mark.parametrize(("channels", "dtype"), [(1, np.uint8), (3, np.uint8), (4, np.uint8), (3, np.uint16)])
def test_lanczos_keeps_layout_and_dtype(channels: int, dtype: type) -> None:
    pixels = _image(channels=channels, dtype=dtype).pixels
    out = lanczos_resize(pixels, (45, 30))
    assert out.shape == (30, 45, channels) and out.dtype == dtype


def test_fast_engine_starts_without_weights_and_resizes(engine: Engine) -> None:
    image = _image()
    [result] = engine.enhance_batch([EnhanceRequest(image, FAST)])
    assert isinstance(result, EnhanceResult)
    assert result.pixels.shape == (40, 60, 3)
    np.testing.assert_array_equal(result.pixels, lanczos_resize(image.pixels, (60, 40)))
    report = result.report
    assert report["quality"] == "fast" and report["faces_found"] == 0
    assert report["output"] == {"width": 60, "height": 40}
    assert report["engine_version"] == ENGINE_VERSION and report["device"] == "cpu"
    assert set(report["timings_ms"]) == {"resize"}


def test_upscale_one_returns_the_input_pixels(engine: Engine) -> None:
    image = _image()
    [result] = engine.enhance_batch([EnhanceRequest(image, EnhanceOptions(quality=Quality.FAST, upscale=1))])
    np.testing.assert_array_equal(result.pixels, image.pixels)


def test_a_quality_not_loaded_fails_only_its_own_slot(engine: Engine) -> None:
    best = EnhanceOptions(quality=Quality.BEST)
    results = engine.enhance_batch([EnhanceRequest(_image(), FAST), EnhanceRequest(_image(), best),
                                    EnhanceRequest(_image(), FAST)])
    assert isinstance(results[0], EnhanceResult) and isinstance(results[2], EnhanceResult)
    assert isinstance(results[1], ImageError) and results[1].code == "quality_not_loaded"
    assert "best" in results[1].reason


def test_bad_pixels_fail_their_slot_and_the_engine_stays_usable(engine: Engine) -> None:
    broken = DecodedImage(np.zeros((0, 5, 3), np.uint8), "png", 5, 0, False, 8)
    results = engine.enhance_batch([EnhanceRequest(broken, FAST), EnhanceRequest(_image(), FAST)])
    assert isinstance(results[0], ImageError) and results[0].code == "processing_failed"
    assert isinstance(results[1], EnhanceResult)
    [again] = engine.enhance_batch([EnhanceRequest(_image(), FAST)])
    assert isinstance(again, EnhanceResult)


def test_async_runs_on_the_dedicated_thread_blocking_on_the_callers(engine: Engine) -> None:
    image = _image()
    seen: list[str] = []
    original = engine._pipeline.run

    def spy(requests):
        seen.append(threading.current_thread().name)
        return original(requests)

    engine._pipeline.run = spy

    async def main() -> list:
        return await engine.enhance_batch_async([EnhanceRequest(image, FAST)])

    [async_result] = asyncio.run(main())
    [blocking] = engine.enhance_batch([EnhanceRequest(image, FAST)])
    np.testing.assert_array_equal(async_result.pixels, blocking.pixels)
    assert len(seen) == 2 and seen[0].startswith("photoenhance-inference")
    assert seen[1] == threading.current_thread().name, "a blocking caller waits anyway: no thread hop"


def test_runs_never_overlap_whichever_thread_they_are_on(engine: Engine) -> None:
    """Blocking callers on several threads and async callers share the models one run at a time."""
    active, most = 0, 0
    guard = threading.Lock()
    original = engine._pipeline.run

    def spy(requests):
        nonlocal active, most
        with guard:
            active += 1
            most = max(most, active)
        time.sleep(0.05)
        try:
            return original(requests)
        finally:
            with guard:
                active -= 1

    engine._pipeline.run = spy
    request = [EnhanceRequest(_image(), FAST)]

    async def async_callers() -> None:
        await asyncio.gather(*(engine.enhance_batch_async(request) for _ in range(3)))

    callers = [threading.Thread(target=engine.enhance_batch, args=(request,)) for _ in range(3)]
    callers.append(threading.Thread(target=asyncio.run, args=(async_callers(),)))
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=60)
    assert most == 1


def test_closed_engine_refuses_work(tmp_path) -> None:
    engine = Engine.load(Settings(weights_dir=tmp_path, device="cpu"), qualities=[Quality.FAST])
    engine.close()
    engine.close()  # idempotent
    with pytest.raises(EngineClosed):
        engine.enhance_batch([EnhanceRequest(_image(), FAST)])


def test_decoded_file_goes_end_to_end(engine: Engine) -> None:
    buffer = io.BytesIO()
    Image.fromarray(_image(channels=4).pixels, "RGBA").save(buffer, "PNG")
    decoded = decode_image(buffer.getvalue(), max_pixels=10**6)
    [result] = engine.enhance_batch([EnhanceRequest(decoded, FAST)])
    assert result.pixels.shape == (40, 60, 4)


def test_an_engine_for_fast_alone_never_imports_torch(tmp_path) -> None:
    """A fast-only worker stays small: torch and its libraries (~0.6 GiB resident) are not loaded,
    and glibc's allocator keeps its defaults (the tuning is for torch's big buffers). In a fresh
    interpreter, since this test session has imported torch already."""
    script = f"""
import sys
import numpy as np
from photoenhance.contracts.options import EnhanceOptions, Quality
from photoenhance.settings import Settings
from processor.engine import Engine, EnhanceRequest
from processor.engine.imageio import DecodedImage

engine = Engine.load(Settings(weights_dir={str(tmp_path)!r}, device="cpu"), qualities=[Quality.FAST])
image = DecodedImage(np.zeros((4, 6, 3), np.uint8), "png", 6, 4, False, 8)
[result] = engine.enhance_batch([EnhanceRequest(image, EnhanceOptions(quality=Quality.FAST, upscale=2.0))])
engine.close()
from processor.engine import allocator
print(result.pixels.shape, "torch" in sys.modules, allocator._applied)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split("\n")[0] == "(8, 12, 3) False None", out.stdout + out.stderr


def test_fast_images_come_out_the_same_from_the_network_pipeline() -> None:
    """An engine that also serves balanced or best runs its fast images through the torch pipeline:
    the same pixels and the same report (the device aside) as the torch-free one."""
    from processor.engine.batch_steps import Pipeline
    from processor.engine.fast import FastPipeline

    requests = [EnhanceRequest(_image(20, 30, c), FAST) for c in (1, 3, 4)]
    requests.append(EnhanceRequest(_image(20, 30, 3), EnhanceOptions(quality=Quality.BEST)))
    network = Pipeline.build(Settings(device="cpu"), frozenset({Quality.FAST})).run(requests)
    plain = FastPipeline().run(requests)
    for a, b in zip(network[:3], plain[:3]):
        assert isinstance(a, EnhanceResult) and isinstance(b, EnhanceResult)
        assert np.array_equal(a.pixels, b.pixels)
        assert {**a.report, "timings_ms": None} == {**b.report, "timings_ms": None}
    assert type(network[3]) is type(plain[3]) and str(network[3]) == str(plain[3])
