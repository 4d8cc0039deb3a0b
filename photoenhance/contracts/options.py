"""Per-batch enhancement options: the one definition the API, manifests, metadata and engine share."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from enum import Enum
from typing import Any, Mapping

__all__ = ["EnhanceOptions", "OptionsError", "OutputFormat", "Quality"]


class OptionsError(ValueError):
    """Options that cannot be used; the message names the offending field."""


class Quality(str, Enum):
    """How much work goes into each image."""

    #: Lanczos resize only; no network. For previews and bulk tests.
    FAST = "fast"
    #: Real-ESRGAN on the whole image; faces are not restored.
    BALANCED = "balanced"
    #: GFPGAN restores faces, Real-ESRGAN upsamples the background.
    BEST = "best"


class OutputFormat(str, Enum):
    """Encoding of the result object."""

    #: The input's own format for JPEG, PNG and WebP; JPEG for HEIC and AVIF inputs
    #: (:func:`photoenhance.contracts.formats.resolve_output_format`).
    AUTO = "auto"
    JPEG = "jpeg"
    PNG = "png"
    WEBP = "webp"
    #: Where the worker's Pillow can write AVIF (``PIL.features.check("avif")``).
    AVIF = "avif"


#: Prefix of object user metadata that carries options (``x-amz-meta-photoenhance-quality: best``).
METADATA_PREFIX = "photoenhance-"


@dataclass(frozen=True)
class EnhanceOptions:
    """What to do with every image of a batch."""

    quality: Quality = Quality.BEST
    #: Output size relative to the input, 1 to 4.
    upscale: float = 2.0
    #: 0 keeps the input face, 1 takes the restored face fully.
    fidelity: float = 0.5
    #: Restore only the face nearest the centre.
    only_center_face: bool = False
    output_format: OutputFormat = OutputFormat.AUTO
    #: Encoder quality for JPEG and WebP, 1 to 100.
    output_quality: int = 92
    #: Background tile edge in input pixels; 0 runs the whole image at once.
    tile: int = 0
    #: Keep the EXIF GPS position in results; off by default, since people share results.
    keep_gps: bool = False

    def __post_init__(self) -> None:
        if not 1.0 <= self.upscale <= 4.0 or not math.isfinite(self.upscale):
            raise OptionsError(f"upscale must be between 1 and 4, got {self.upscale}")
        if not 0.0 <= self.fidelity <= 1.0:
            raise OptionsError(f"fidelity must be between 0 and 1, got {self.fidelity}")
        if not 1 <= self.output_quality <= 100:
            raise OptionsError(f"output_quality must be between 1 and 100, got {self.output_quality}")
        if self.tile < 0 or (0 < self.tile < 32):
            raise OptionsError(f"tile must be 0 (off) or at least 32 pixels, got {self.tile}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> EnhanceOptions:
        """Build options from JSON-like data, refusing unknown names and wrong types."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise OptionsError("options must be a JSON object")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise OptionsError(f"unknown option(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            values[name] = _coerce(name, value)
        return cls(**values)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], base: EnhanceOptions | None = None) -> EnhanceOptions:
        """Options carried in object user metadata (``photoenhance-<option>``), over ``base``."""
        picked = {
            name[len(METADATA_PREFIX):].replace("-", "_"): value
            for name, value in metadata.items()
            if name.startswith(METADATA_PREFIX)
        }
        merged = (base or cls()).to_dict()
        merged.update(picked)
        return cls.from_dict(merged)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        out = asdict(self)
        out["quality"] = self.quality.value
        out["output_format"] = self.output_format.value
        return out


def _coerce(name: str, value: Any) -> Any:
    """Convert a JSON or metadata value to the field's type, or raise :class:`OptionsError`."""
    try:
        if name == "quality":
            return Quality(value)
        if name == "output_format":
            return OutputFormat("jpeg" if value == "jpg" else value)
        if name in {"only_center_face", "keep_gps"}:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in {"true", "false", "1", "0"}:
                return value.lower() in {"true", "1"}
            raise ValueError("expected true or false")
        if name in {"upscale", "fidelity"}:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if name in {"output_quality", "tile"}:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected an integer")
            return int(value)
    except (TypeError, ValueError) as exc:
        raise OptionsError(f"option {name}={value!r}: {exc}") from exc
    raise OptionsError(f"unknown option: {name}")
