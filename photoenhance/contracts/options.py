"""Per-batch enhancement options: the one definition the API, manifests, metadata and engine share.

JSON (the API's request bodies, ``_batch.json`` manifests, stored batch options) is read strictly:
numbers must be JSON numbers, flags JSON booleans (``"4"`` or ``"true"`` are refused). Object
user metadata is text by nature (S3 stores every value as a string), so options read from it
accept the same values written as text: ``"4"``, ``"true"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

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


#: Largest background tile edge, in input pixels. A tile bounds the memory of one Real-ESRGAN
#: pass; past this edge it no longer bounds much (and 10**30 was once stored as a batch option).
MAX_TILE = 4096

#: Smallest tile edge (below it the seams cost more than the tiles save).
MIN_TILE = 32

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
        if not (self.tile == 0 or MIN_TILE <= self.tile <= MAX_TILE):
            raise OptionsError(f"tile must be 0 (off) or {MIN_TILE} to {MAX_TILE} pixels, got {self.tile}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, text_values: bool = False) -> EnhanceOptions:
        """Build options from JSON data, refusing unknown names and wrong types.

        ``text_values``: numbers and flags may also be written as text (``"4"``, ``"true"``), as
        object metadata carries them; JSON sources leave it off, so ``"4"`` is refused there.
        """
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
            values[name] = _coerce(name, value, text_values=text_values)
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
        return cls.from_dict(merged, text_values=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        # Every field is a scalar: read them directly (``asdict`` deep-copies, once per image per call).
        out = {name: getattr(self, name) for name in _FIELD_NAMES}
        out["quality"] = self.quality.value
        out["output_format"] = self.output_format.value
        return out


#: The options' names, in declaration order.
_FIELD_NAMES = tuple(f.name for f in fields(EnhanceOptions))


def _coerce(name: str, value: Any, *, text_values: bool = False) -> Any:
    """Convert a JSON (or, with ``text_values``, a metadata) value to the field's type, or raise
    :class:`OptionsError` naming the option and what it takes."""
    try:
        if name == "quality":
            return Quality(_text(value))
        if name == "output_format":
            value = _text(value)
            return OutputFormat("jpeg" if value == "jpg" else value)
        if name in {"only_center_face", "keep_gps"}:
            if isinstance(value, bool):
                return value
            if text_values and isinstance(value, str) and value.lower() in {"true", "false", "1", "0"}:
                return value.lower() in {"true", "1"}
            raise ValueError("expected true or false (a JSON boolean)")
        if name in {"upscale", "fidelity"}:
            number = _number(value, text_values)
            return float(number)
        if name in {"output_quality", "tile"}:
            number = _number(value, text_values)
            if isinstance(number, float) and not number.is_integer():
                raise ValueError("expected a whole number")
            return int(number)
    except (TypeError, ValueError, OverflowError) as exc:
        raise OptionsError(f"option {name}={_shown(value)}: {exc}") from exc
    raise OptionsError(f"unknown option: {name}")


def _number(value: Any, text_values: bool) -> int | float:
    """A JSON number (never a boolean); with ``text_values``, also a number written as text."""
    if isinstance(value, bool):
        raise TypeError("expected a number, not true or false")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError("expected a finite number")
        return value
    if text_values and isinstance(value, str) and len(value) <= 32:
        number = float(value)
        if not math.isfinite(number):
            raise ValueError("expected a finite number")
        return number
    raise TypeError(f"expected a JSON number, not {_json_type(value)}")


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, not {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _shown(value: Any) -> str:
    """The value as quoted in a reason, never longer than a line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
