"""Build the four networks from their architectures and load them from local files, never from a URL.

The architectures are the reference ones (gfpgan's GFPGANv1Clean, facexlib's RetinaFace and ParseNet,
basicsr's RRDBNet, realesrgan's SRVGGNetCompact), constructed here directly so nothing reaches for the
network or for a path relative to the working directory as the reference helpers do.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from processor.engine import compat
from processor.engine.errors import WeightsError
from processor.engine.weights import load_state_dict

__all__ = [
    "BackgroundNet",
    "build_background",
    "build_detector",
    "build_parser",
    "build_restorer",
    "load_into",
]


@dataclass(frozen=True)
class BackgroundNet:
    """A background upsampler and the fixed factor it enlarges by."""

    module: torch.nn.Module
    scale: int
    key: str
    #: Input sides must be multiples of this (RRDBNet x2 unshuffles by 2 first).
    multiple: int = 1
    #: Context (input pixels) each tile needs on every side so that tiling changes the output by at
    #: most ~2 levels. Measured with the real x4plus weights: changing pixels 64 input pixels away
    #: still moved the output by 14 levels, 96 pixels away by 1.4; RRDBNet x2 runs the same trunk at
    #: half resolution, so it needs twice the input pixels; SRVGGNetCompact (18 layers) needs little.
    context: int = 24


def build_restorer() -> torch.nn.Module:
    """GFPGAN v1.4: the clean architecture with channel multiplier 2, as the v1.4 weights need."""
    compat.install_torchvision_alias()
    from gfpgan.archs.gfpganv1_clean_arch import GFPGANv1Clean

    return GFPGANv1Clean(
        out_size=512,
        num_style_feat=512,
        channel_multiplier=2,
        decoder_load_path=None,
        fix_decoder=False,
        num_mlp=8,
        input_is_latent=True,
        different_w=True,
        narrow=1,
        sft_half=True,
    )


def build_detector(device: torch.device) -> torch.nn.Module:
    """RetinaFace with a ResNet-50 backbone (no torchvision download: its backbone starts empty)."""
    compat.install_torchvision_alias()
    from facexlib.detection.retinaface import RetinaFace

    with warnings.catch_warnings():  # facexlib still passes torchvision's deprecated `pretrained=False`
        warnings.simplefilter("ignore", UserWarning)
        return RetinaFace(network_name="resnet50", half=False, device=device)


def build_parser() -> torch.nn.Module:
    """ParseNet, the 19-class face parser whose output shapes the paste-back mask."""
    compat.install_torchvision_alias()
    from facexlib.parsing.parsenet import ParseNet

    return ParseNet(in_size=512, out_size=512, parsing_ch=19)


def build_background(key: str) -> BackgroundNet:
    """The background upsampler architecture for a model key of :data:`weights.BACKGROUND_MODELS`."""
    compat.install_torchvision_alias()
    if key == "x2plus":
        from basicsr.archs.rrdbnet_arch import RRDBNet

        net = RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=2)
        return BackgroundNet(net, scale=2, key=key, multiple=2, context=192)
    if key == "x4plus-ncnn":
        from basicsr.archs.rrdbnet_arch import RRDBNet

        net = RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=4)
        return BackgroundNet(net, scale=4, key=key, context=96)
    if key == "animevideov3-ncnn":
        from realesrgan.archs.srvgg_arch import SRVGGNetCompact

        net = SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4, act_type="prelu")
        return BackgroundNet(net, scale=4, key=key, context=24)
    raise WeightsError(f"unknown background model {key!r}")


def load_into(module: torch.nn.Module, path: Path, device: torch.device) -> torch.nn.Module:
    """Load ``path`` strictly into ``module``, then freeze it for inference on ``device``."""
    state = load_state_dict(path)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise WeightsError(f"{path} does not fit the {type(module).__name__} architecture: {first}") from exc
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module.to(device)
