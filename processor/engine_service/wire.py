"""The frames between worker processes and the engine process: the one home of that contract.

A frame is a fixed prefix (header length, payload length: big-endian u32 and u64), a JSON header
and a raw payload. Pixels travel as the payload, row-major, exactly as NumPy holds them, so neither
side pickles anything: a frame can describe an array, never run code. Every size is checked
before anything is read, against limits the reader passes in.

- ``hello`` (engine → worker, once per connection): the levels loaded, the device, the engine
  version and the largest payloads it accepts;
- request (worker → engine): ``id``, the options, the decoded image's description (shape, dtype,
  size, bit depth, format, the decoding notes) and, for tests and benchmarks, known face landmarks;
  the payload is the pixels;
- result (engine → worker): ``id`` and either the report (payload: the enhanced pixels) or the
  image's error (``code`` and ``reason``, rebuilt as the same :class:`ImageError` class).

Functions here are pure apart from :func:`read_frame` and :func:`write_frame`.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from photoenhance.contracts.failures import ImageError, image_error_from_dict
from photoenhance.contracts.options import EnhanceOptions
from processor.engine.imageio import DecodedImage
from processor.engine.records import EnhanceRequest, EnhanceResult

__all__ = [
    "MAX_HEADER_BYTES",
    "EngineUnavailable",
    "FrameError",
    "Hello",
    "PayloadTooLarge",
    "error_header",
    "max_pixel_bytes",
    "outcome_from",
    "read_frame",
    "request_frame",
    "request_from",
    "result_frame",
    "write_frame",
]

#: Header length (u32) and payload length (u64), big-endian.
PREFIX = struct.Struct(">IQ")
#: A header is a few kilobytes at most (a report with many faces); anything larger is not ours.
MAX_HEADER_BYTES = 1 << 20
#: The sample types a picture may have (see :class:`DecodedImage`).
DTYPES = {"uint8": np.uint8, "uint16": np.uint16}

class FrameError(Exception):
    """A frame that breaks this contract (sizes, JSON, fields); the connection carrying it is closed."""


class PayloadTooLarge(FrameError):
    """A frame whose payload is over the reader's limit; its header was read and its payload
    skipped, so the connection can go on and the request be answered."""

    def __init__(self, header: dict[str, Any], size: int, limit: int) -> None:
        super().__init__(f"a payload of {size} bytes (at most {limit})")
        self.header = header


class EngineUnavailable(ConnectionError):
    """The engine process cannot be reached, or went away with the request; another attempt can succeed."""


def max_pixel_bytes(pixels: int) -> int:
    """The largest payload a picture of ``pixels`` pixels can need (4 channels of 16 bits)."""
    return pixels * 4 * 2


@dataclass(frozen=True)
class Hello:
    """What the engine process tells each worker that connects."""

    levels: list[str]
    device: str
    engine_version: str
    max_request_bytes: int

    def to_header(self) -> dict[str, Any]:
        return {"hello": asdict(self)}

    @classmethod
    def from_header(cls, header: Mapping[str, Any]) -> Hello:
        body = header.get("hello")
        try:
            return cls([str(level) for level in body["levels"]], str(body["device"]), str(body["engine_version"]),
                       int(body["max_request_bytes"]))
        except (TypeError, KeyError, ValueError) as exc:
            raise FrameError(f"not an engine's hello: {exc!r}") from exc


# -- framing ------------------------------------------------------------------------------------


def encode_frame(header: Mapping[str, Any], payload: bytes | memoryview = b"") -> list[bytes | memoryview]:
    """The frame's parts, ready for ``writelines`` (the payload is not copied)."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return [PREFIX.pack(len(head), len(payload)) + head, payload]


async def write_frame(writer: asyncio.StreamWriter, header: Mapping[str, Any], payload: bytes | memoryview = b"") -> None:
    """Write one frame (in one call, so frames of concurrent writers never interleave) and wait for
    the transport's buffer to drain."""
    writer.writelines(encode_frame(header, payload))
    await writer.drain()


#: Reading of a payload to skip, a piece at a time (memory stays bounded whatever its size).
SKIP_CHUNK = 1 << 20


async def read_frame(
    reader: asyncio.StreamReader, max_payload: int, *, skip_over: int = 0
) -> tuple[dict[str, Any], bytes]:
    """The next frame's header and payload. Raises :class:`asyncio.IncompleteReadError` at the end
    of the stream, :class:`FrameError` for sizes over the limits or a header that is no JSON object.

    A payload over ``max_payload`` but within ``skip_over`` is read and dropped, a piece at a time,
    and reported as :class:`PayloadTooLarge` with its header; larger ones end the stream's use.
    """
    head_len, payload_len = PREFIX.unpack(await reader.readexactly(PREFIX.size))
    if head_len > MAX_HEADER_BYTES:
        raise FrameError(f"a header of {head_len} bytes (at most {MAX_HEADER_BYTES})")
    if payload_len > max(max_payload, skip_over):
        raise FrameError(f"a payload of {payload_len} bytes (at most {max_payload})")
    try:
        header = json.loads(await reader.readexactly(head_len))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameError(f"a header that is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise FrameError("a header that is not a JSON object")
    if payload_len > max_payload:
        left = payload_len
        while left:
            left -= len(await reader.readexactly(min(left, SKIP_CHUNK)))
        raise PayloadTooLarge(header, payload_len, max_payload)
    payload = await reader.readexactly(payload_len) if payload_len else b""
    return header, payload


# -- requests -----------------------------------------------------------------------------------


def _array_bytes(pixels: np.ndarray) -> memoryview:
    return memoryview(np.ascontiguousarray(pixels)).cast("B")


def request_frame(request_id: int, request: EnhanceRequest) -> tuple[dict[str, Any], memoryview]:
    """The header and payload asking the engine for ``request``. What the engine does not read
    (the profile, EXIF and XMP, the wide-gamut residual) stays with the worker, which encodes."""
    image = request.image
    header = {
        "id": request_id,
        "options": request.options.to_dict(),
        "image": {
            "shape": list(image.pixels.shape),
            "dtype": str(image.pixels.dtype),
            "source_format": image.source_format,
            "width": image.width,
            "height": image.height,
            "has_alpha": image.has_alpha,
            "bit_depth": image.bit_depth,
            "source_mode": image.source_mode,
            "orientation": image.orientation,
            "notes": image.notes,
        },
    }
    if request.faces is not None:
        header["faces"] = [np.asarray(face, dtype=float).tolist() for face in request.faces]
    return header, _array_bytes(image.pixels)


def _array(description: Mapping[str, Any], payload: bytes, *, writable: bool) -> np.ndarray:
    dtype = DTYPES.get(str(description.get("dtype")))
    shape = description.get("shape")
    if dtype is None:
        raise FrameError(f"pixels of type {description.get('dtype')!r} (uint8 or uint16)")
    if (not isinstance(shape, list) or len(shape) != 3 or not all(isinstance(n, int) and n > 0 for n in shape)
            or shape[2] not in (1, 3, 4)):
        raise FrameError(f"pixels of shape {shape!r} (height, width, 1/3/4 channels)")
    expected = shape[0] * shape[1] * shape[2] * np.dtype(dtype).itemsize
    if expected != len(payload):
        raise FrameError(f"{len(payload)} bytes of pixels for shape {shape} of {description.get('dtype')}")
    # The engine may work in place on its input; a result is only read.
    buffer = bytearray(payload) if writable else payload
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def request_from(header: Mapping[str, Any], payload: bytes) -> EnhanceRequest:
    """The :class:`EnhanceRequest` a request frame describes; :class:`FrameError` if it breaks the
    contract, the options' own error if they are unusable."""
    image = header.get("image")
    if not isinstance(image, dict):
        raise FrameError("a request without its image")
    pixels = _array(image, payload, writable=True)
    try:
        decoded = DecodedImage(
            pixels=pixels,
            source_format=str(image["source_format"]),
            width=int(image["width"]),
            height=int(image["height"]),
            has_alpha=bool(image["has_alpha"]),
            bit_depth=int(image["bit_depth"]),
            source_mode=str(image.get("source_mode", "")),
            orientation=int(image.get("orientation", 1)),
            notes=dict(image.get("notes") or {}),
        )
        faces = header.get("faces")
        landmarks = None if faces is None else [np.asarray(face, dtype=np.float32).reshape(5, 2) for face in faces]
    except (KeyError, TypeError, ValueError) as exc:
        raise FrameError(f"a request with a malformed image description: {exc!r}") from exc
    return EnhanceRequest(decoded, EnhanceOptions.from_dict(header.get("options")), faces=landmarks)


# -- results ------------------------------------------------------------------------------------


def error_header(request_id: int, error: ImageError) -> dict[str, Any]:
    """A result frame's header for one image's error."""
    return {"id": request_id, "error": error.to_dict()}


def result_frame(request_id: int, outcome: EnhanceResult | ImageError) -> tuple[dict[str, Any], bytes | memoryview]:
    """The header and payload answering request ``request_id``."""
    if isinstance(outcome, ImageError):
        return error_header(request_id, outcome), b""
    header = {"id": request_id, "report": outcome.report,
              "pixels": {"shape": list(outcome.pixels.shape), "dtype": str(outcome.pixels.dtype)}}
    return header, _array_bytes(outcome.pixels)


def outcome_from(header: Mapping[str, Any], payload: bytes) -> EnhanceResult | ImageError:
    """What a result frame says: the enhanced pixels and report, or the image's error as the class
    the engine raised (so ``QualityNotLoaded`` stays recognisable)."""
    error = header.get("error")
    if isinstance(error, dict):
        return image_error_from_dict(error)
    report, pixels = header.get("report"), header.get("pixels")
    if not isinstance(report, dict) or not isinstance(pixels, dict):
        raise FrameError("a result with neither an error nor a report and pixels")
    return EnhanceResult(_array(pixels, payload, writable=False), report)
