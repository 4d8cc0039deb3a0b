"""The engine with real architectures and random weights, against the stock GFPGANer and RealESRGANer.

Random detector weights find no face, so face tests give both sides the same fixed landmarks. Every
figure the engine's closing note quotes is printed with a ``FIGURE`` prefix (run with ``-s``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from harness.weights import give_landmarks, stock_gfpganer
from photoenhance.contracts.options import EnhanceOptions, Quality
from photoenhance.settings import Settings
from processor.engine import Engine, EnhanceRequest, EnhanceResult
from processor.engine.errors import ImageError, WeightsError
from processor.engine.imageio import DecodedImage

pytestmark = pytest.mark.models

BEST = EnhanceOptions(quality=Quality.BEST, upscale=2, fidelity=1.0)
BALANCED = EnhanceOptions(quality=Quality.BALANCED, upscale=2)


def picture(size: int, seed: int, channels: int = 3, dtype: type = np.uint8) -> np.ndarray:
    """A smooth random RGB(A)/grey picture: blurred noise, so the upsampler has structure to work on."""
    rng = np.random.default_rng(seed)
    top = 65535 if dtype == np.uint16 else 255
    noise = rng.random((size, size, channels)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (7, 7), 2)
    smooth = smooth if smooth.ndim == 3 else smooth[:, :, None]
    return np.round(smooth * top).astype(dtype)


def landmarks(size: int, dx: float = 0.0) -> np.ndarray:
    """Five plausible face landmarks (eyes 28 px apart at 128 px) scaled to a ``size`` picture."""
    base = np.array([[50, 55], [78, 55], [64, 70], [53, 85], [75, 85]], np.float32)
    return (base + [dx, 0]) * (size / 128)


def decoded(pixels: np.ndarray) -> DecodedImage:
    return DecodedImage(pixels, "png", pixels.shape[1], pixels.shape[0], pixels.shape[2] == 4,
                        16 if pixels.dtype == np.uint16 else 8)


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


@pytest.fixture(scope="module")
def engine(random_weights_dir: Path) -> Engine:
    settings = Settings(weights_dir=random_weights_dir, allow_custom_weights=True, device="cpu")
    loaded = Engine.load(settings)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def stock(random_weights_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The reference GFPGANer (its RealESRGANer at ``.bg_upsampler``), built in a scratch directory."""
    workdir = tmp_path_factory.mktemp("stock")
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        yield stock_gfpganer(random_weights_dir, workdir)
    finally:
        os.chdir(previous)


def test_best_with_faces_equals_stock_gfpganer(engine: Engine, stock) -> None:
    pixels = picture(128, seed=1)
    [ours] = engine.enhance_batch([EnhanceRequest(decoded(pixels), BEST, faces=[landmarks(128)])])
    assert isinstance(ours, EnhanceResult), ours
    give_landmarks(stock, [landmarks(128)])
    _, _, reference = stock.enhance(np.ascontiguousarray(pixels[:, :, ::-1]), paste_back=True)
    diff = max_diff(ours.pixels[:, :, ::-1], reference)
    print(f"FIGURE equivalence_with_face_max_abs_diff={diff}")
    assert diff <= 2
    report = ours.report
    assert report["faces_found"] == 1 and report["faces"][0]["eye_distance"] == pytest.approx(28.0, abs=0.1)
    assert report["output"] == {"width": 256, "height": 256} and report["background_model"] == "x2plus"
    assert {"align", "restore", "parse", "background", "paste"} <= set(report["timings_ms"])
    # The face really changed the picture: a face-less run differs a lot inside the face.
    [plain] = engine.enhance_batch([EnhanceRequest(decoded(pixels), BALANCED)])
    assert max_diff(plain.pixels, ours.pixels) > 20


def test_best_without_faces_equals_stock_gfpganer(engine: Engine, stock) -> None:
    pixels = picture(96, seed=2)
    [ours] = engine.enhance_batch([EnhanceRequest(decoded(pixels), BEST)])
    stock.face_helper.get_face_landmarks_5 = type(stock.face_helper).get_face_landmarks_5.__get__(stock.face_helper)
    _, _, reference = stock.enhance(np.ascontiguousarray(pixels[:, :, ::-1]), paste_back=True)
    diff = max_diff(ours.pixels[:, :, ::-1], reference)
    print(f"FIGURE equivalence_without_face_max_abs_diff={diff}")
    assert ours.report["faces_found"] == 0  # random detector weights find nothing, on both sides
    assert diff <= 2


@pytest.mark.parametrize(("channels", "dtype", "upscale"),
                         [(3, np.uint8, 3.0), (4, np.uint8, 2.0), (1, np.uint8, 2.0), (3, np.uint16, 2.0)])
def test_balanced_equals_stock_realesrganer(engine: Engine, stock, channels: int, dtype: type, upscale: float) -> None:
    pixels = picture(48, seed=channels, channels=channels, dtype=dtype)
    options = EnhanceOptions(quality=Quality.BALANCED, upscale=upscale)
    [ours] = engine.enhance_batch([EnhanceRequest(decoded(pixels), options)])
    if channels == 3:
        bgr = pixels[:, :, ::-1]
    elif channels == 4:
        bgr = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA)
    else:
        bgr = pixels[:, :, 0]
    reference, _ = stock.bg_upsampler.enhance(np.ascontiguousarray(bgr), outscale=upscale)
    reference = reference[:, :, None] if reference.ndim == 2 else reference
    if channels == 3:
        reference = reference[:, :, ::-1]
    elif channels == 4:
        reference = cv2.cvtColor(reference, cv2.COLOR_BGRA2RGBA)
    assert ours.pixels.dtype == pixels.dtype and ours.pixels.shape[2] == channels
    step = 257 if dtype == np.uint16 else 1
    diff = max_diff(ours.pixels, reference) / step
    print(f"FIGURE balanced_vs_realesrganer[{channels}ch,{np.dtype(dtype).name},x{upscale}]_max_abs_diff={diff:.2f}")
    assert diff <= 2
    if channels == 4:  # the alpha went through the network, not a plain resize
        plain = cv2.resize(pixels[:, :, 3], ours.pixels.shape[1::-1], interpolation=cv2.INTER_LANCZOS4)
        assert max_diff(ours.pixels[:, :, 3], plain) > 2


def test_four_images_in_one_micro_batch_equal_one_at_a_time(engine: Engine, monkeypatch) -> None:
    # All four faces in one GFPGAN/ParseNet forward, as on a GPU (the CPU default is one per forward).
    monkeypatch.setattr(engine._pipeline, "limits", dataclasses.replace(engine._pipeline.limits, max_faces_per_forward=4))
    requests = [EnhanceRequest(decoded(picture(96, seed=10 + i)), BEST, faces=[landmarks(96, dx=2 * i)])
                for i in range(4)]
    started = time.perf_counter()
    together = engine.enhance_batch(requests)
    batched_s = time.perf_counter() - started
    started = time.perf_counter()
    alone = [engine.enhance_batch([request])[0] for request in requests]
    single_s = time.perf_counter() - started
    diffs = [max_diff(a.pixels, b.pixels) for a, b in zip(together, alone)]
    print(f"FIGURE batch_of_4_vs_single_max_abs_diff={max(diffs)} (per image {diffs}); "
          f"cpu seconds batched={batched_s:.1f} single={single_s:.1f}")
    assert all(r.report["faces_found"] == 1 for r in together)
    assert max(diffs) <= 1


def test_tiled_background_equals_untiled_including_tile_borders(engine: Engine, monkeypatch) -> None:
    # x2plus's own context (192 pixels, sized for the trained weights) would make every window of a
    # CPU-sized picture the whole picture; 24 pixels cut this one into 16 real tiles.
    monkeypatch.setattr(engine._pipeline, "limits", dataclasses.replace(engine._pipeline.limits, tile_pad=24))
    pixels = picture(112, seed=7)
    untiled, tiled = engine.enhance_batch([EnhanceRequest(decoded(pixels), BALANCED),
                                           EnhanceRequest(decoded(pixels), EnhanceOptions(
                                               quality=Quality.BALANCED, upscale=2, tile=32))])
    diff = np.abs(untiled.pixels.astype(int) - tiled.pixels.astype(int)).max(axis=2)
    # Output rows/columns within 2 output pixels of a core boundary (every 32 input pixels).
    near = np.zeros(diff.shape, bool)
    for edge in range(64, diff.shape[0], 64):
        near[edge - 2:edge + 2, :] = True
        near[:, edge - 2:edge + 2] = True
    print(f"FIGURE tiled_vs_untiled_max_abs_diff={diff.max()} along_tile_borders={diff[near].max()}")
    assert tiled.report["tile"] == 32
    assert diff.max() <= 2


def test_one_bad_image_fails_alone_and_the_engine_goes_on(engine: Engine) -> None:
    good = EnhanceRequest(decoded(picture(40, seed=3)), BALANCED)
    empty = EnhanceRequest(DecodedImage(np.zeros((0, 8, 3), np.uint8), "png", 8, 0, False, 8), BALANCED)
    three_points = np.array([[10, 10], [20, 10], [15, 20]], np.float32)  # not five landmarks
    degenerate = EnhanceRequest(decoded(picture(40, seed=4)), BEST, faces=[three_points])
    results = engine.enhance_batch([good, empty, degenerate, good])
    assert isinstance(results[0], EnhanceResult) and isinstance(results[3], EnhanceResult)
    for failed in results[1:3]:
        assert isinstance(failed, ImageError) and failed.code == "processing_failed", failed
    assert "background" in results[1].reason and "detect" in results[2].reason
    np.testing.assert_array_equal(results[0].pixels, results[3].pixels)
    [after] = engine.enhance_batch([good])
    np.testing.assert_array_equal(after.pixels, results[0].pixels)


def test_async_enhance_leaves_the_event_loop_free(engine: Engine) -> None:
    request = EnhanceRequest(decoded(picture(64, seed=6)), BALANCED)

    async def main() -> tuple[int, object]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        [result] = await engine.enhance_batch_async([request])
        task.cancel()
        return ticks, result

    ticks, result = asyncio.run(main())
    assert isinstance(result, EnhanceResult)
    assert ticks >= 5  # the loop kept running while the network worked


def test_no_socket_is_opened_while_loading_and_enhancing(random_weights_dir: Path, monkeypatch) -> None:
    attempts: list[str] = []

    def refuse(name: str):
        def blocked(*args, **kwargs):
            attempts.append(name)
            raise OSError(f"network access attempted: {name}")
        return blocked

    class NoSocket(socket.socket):
        def __init__(self, *args, **kwargs) -> None:
            attempts.append("socket.socket")
            raise OSError("network access attempted: socket.socket")

    monkeypatch.setattr(socket, "socket", NoSocket)
    for name in ("create_connection", "getaddrinfo", "socketpair"):
        monkeypatch.setattr(socket, name, refuse(name))
    settings = Settings(weights_dir=random_weights_dir, allow_custom_weights=True, device="cpu")
    with Engine.load(settings) as engine:
        results = engine.enhance_batch([EnhanceRequest(decoded(picture(48, seed=8)), BEST),
                                        EnhanceRequest(decoded(picture(48, seed=9)), BALANCED)])
    assert all(isinstance(r, EnhanceResult) for r in results)
    assert attempts == []
    with pytest.raises(OSError):  # the guard itself works
        socket.create_connection(("127.0.0.1", 9))


def test_missing_weights_fail_at_start_naming_the_file_and_its_url(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as info:
        Engine.load(Settings(weights_dir=tmp_path, device="cpu"), qualities=[Quality.BEST])
    message = str(info.value)
    for name in ("GFPGANv1.4.pth", "detection_Resnet50_Final.pth", "parsing_parsenet.pth", "RealESRGAN_x2plus.pth"):
        assert name in message
    assert "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth" in message
    assert "import-ncnn" in message


def test_random_weights_are_refused_without_the_custom_weights_setting(random_weights_dir: Path) -> None:
    with pytest.raises(WeightsError, match="not the official"):
        Engine.load(Settings(weights_dir=random_weights_dir, device="cpu"), qualities=[Quality.BALANCED])
