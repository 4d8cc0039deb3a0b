"""Bytes to pixels and back: the engine's only contact with file formats.

Decoding sniffs the format from the bytes, refuses oversized images from the header before any pixel
is decoded, honours EXIF orientation and normalises every mode to one layout: ``(height, width,
channels)`` with 1 (grey), 3 (RGB) or 4 (RGBA) channels in RGB order, ``uint8`` or ``uint16``.
Every failure is a typed :class:`~processor.engine.errors.ImageError`.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from photoenhance.contracts.options import EnhanceOptions, OutputFormat
from processor.engine.errors import CorruptImage, OutputTooLarge, TooManyPixels, UnsupportedImage
from photoenhance.formats import png_bit_depth, sniff_format

__all__ = [
    "DecodedImage",
    "EncodedImage",
    "apply_orientation",
    "decode_image",
    "encode_image",
]

#: EXIF tag number of "Orientation".
_EXIF_ORIENTATION = 0x0112

#: Largest edge the WebP format can hold.
_WEBP_MAX_EDGE = 16383

#: Largest edge of a baseline JPEG.
_JPEG_MAX_EDGE = 65535

#: Samples per pixel of each PNG colour type (IHDR): grey, RGB, palette, grey+alpha, RGBA.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}

#: The seven Adam7 passes of an interlaced PNG: (first column, first row, column step, row step).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))

#: Bytes inflated at a time when measuring a PNG's pixel data (the output is not kept), and
#: compressed bytes fed at a time (so the input zlib holds back, and copies, stays small too).
_INFLATE_PIECE = 1 << 20
_FEED_PIECE = 1 << 16

#: Errors Pillow and its codecs raise for damaged data (truncation is an OSError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, zlib.error, TypeError)

#: Pillow modes turned into 8-bit RGB, RGBA or grey, by what they become.
_TO_RGB = {"RGB", "RGBX", "CMYK", "YCbCr"}
_TO_RGBA = {"RGBA", "RGBa", "LA", "La", "PA"}
_TO_GREY = {"1", "L"}
_GREY16 = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


@dataclass(frozen=True)
class DecodedImage:
    """Pixels ready for the engine, plus what the file said about them."""

    #: ``(height, width, channels)``, channels 1, 3 or 4 in RGB(A) order, uint8 or uint16.
    pixels: np.ndarray
    #: ``"jpeg"``, ``"png"`` or ``"webp"``, from the bytes.
    source_format: str
    #: Width and height after EXIF orientation.
    width: int
    height: int
    has_alpha: bool
    #: 8 or 16 bits per sample.
    bit_depth: int
    #: The file's own colour mode as Pillow names it (``"CMYK"``, ``"P"``, ``"I;16"`` ...).
    source_mode: str = ""
    #: EXIF orientation that was applied (1 = none).
    orientation: int = 1

    @property
    def megapixels(self) -> float:
        """Size in millions of pixels."""
        return self.width * self.height / 1e6


@dataclass(frozen=True)
class EncodedImage:
    """An encoded result ready to store."""

    data: bytes
    #: MIME type, e.g. ``"image/jpeg"``.
    content_type: str
    #: File extension without the dot: ``"jpg"``, ``"png"`` or ``"webp"``.
    extension: str


def decode_image(data: bytes, *, max_pixels: int) -> DecodedImage:
    """Decode ``data`` into a :class:`DecodedImage` or raise a typed :class:`ImageError`.

    The pixel count is checked from the header, before decoding, against ``max_pixels``.
    """
    fmt = sniff_format(data)
    image = _open(data, fmt)
    try:
        width, height = image.size
        if width * height > max_pixels:
            raise TooManyPixels(_too_many(width, height, max_pixels))
        mode = image.mode
        _load(image)
        orientation = _orientation(image)
        if fmt == "png" and png_bit_depth(data) == 16 and mode not in _GREY16:
            # Pillow keeps only 8 of the 16 bits of colour PNGs; OpenCV keeps all of them.
            pixels = _decode_png16(data)
        else:
            pixels = _pillow_to_array(image)
    finally:
        image.close()
    pixels = apply_orientation(pixels, orientation)
    return DecodedImage(
        pixels=pixels,
        source_format=fmt,
        width=pixels.shape[1],
        height=pixels.shape[0],
        has_alpha=pixels.shape[2] == 4,
        bit_depth=16 if pixels.dtype == np.uint16 else 8,
        source_mode=mode,
        orientation=orientation,
    )


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn pixels stored with EXIF ``orientation`` (1-8) upright; unknown values leave them as they are."""
    if orientation == 2:
        out = pixels[:, ::-1]
    elif orientation == 3:
        out = pixels[::-1, ::-1]
    elif orientation == 4:
        out = pixels[::-1]
    elif orientation == 5:
        out = pixels.transpose(1, 0, 2)
    elif orientation == 6:
        out = pixels.transpose(1, 0, 2)[:, ::-1]
    elif orientation == 7:
        out = pixels.transpose(1, 0, 2)[::-1, ::-1]
    elif orientation == 8:
        out = pixels.transpose(1, 0, 2)[::-1]
    else:
        return pixels
    return np.ascontiguousarray(out)


def encode_image(pixels: np.ndarray, options: EnhanceOptions) -> EncodedImage:
    """Encode ``(h, w, c)`` RGB(A)/grey pixels as ``options.output_format``.

    JPEG has no alpha: transparent areas are composited onto white. JPEG and WebP hold 8 bits, so
    16-bit pixels are reduced; PNG keeps 16 bits. No metadata is written: the orientation is already
    applied, so copying EXIF would turn the picture twice.
    """
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    fmt = options.output_format
    height, width = pixels.shape[:2]
    limit = _WEBP_MAX_EDGE if fmt is OutputFormat.WEBP else _JPEG_MAX_EDGE
    if max(width, height) > limit:
        raise OutputTooLarge(
            f"the result would be {width}x{height}, larger than {fmt.value.upper()} can hold "
            f"({limit} pixels per edge); choose a smaller upscale or another format"
        )
    if fmt is OutputFormat.PNG:
        if pixels.dtype == np.uint16:
            return EncodedImage(_encode_png16(pixels), "image/png", "png")
        buffer = _save(_to_pillow(_to_uint8(pixels)), "PNG", compress_level=6)
        return EncodedImage(buffer, "image/png", "png")
    eight = _to_uint8(pixels)
    if fmt is OutputFormat.JPEG:
        if eight.shape[2] == 4:
            eight = _flatten_on_white(eight)
        data = _save(_to_pillow(eight), "JPEG", quality=options.output_quality, optimize=True)
        return EncodedImage(data, "image/jpeg", "jpg")
    if eight.shape[2] == 1:  # WebP has no grey mode
        eight = np.repeat(eight, 3, axis=2)
    data = _save(_to_pillow(eight), "WEBP", quality=options.output_quality, method=4)
    return EncodedImage(data, "image/webp", "webp")


# -- decoding helpers -------------------------------------------------------------------------


def _open(data: bytes, fmt: str) -> Image.Image:
    """Open lazily (header only), mapping Pillow's failures to typed errors."""
    try:
        with warnings.catch_warnings():
            # Our own limit applies; Pillow's bomb warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=[fmt.upper()])
    except Image.DecompressionBombError as exc:
        raise TooManyPixels(f"the header announces an enormous image ({exc})") from exc
    except Image.UnidentifiedImageError as exc:
        raise CorruptImage(f"the {fmt.upper()} header is damaged and cannot be read") from exc
    except _DECODE_ERRORS as exc:
        raise CorruptImage(f"the {fmt.upper()} header is damaged: {exc}") from exc


def _load(image: Image.Image) -> None:
    """Decode all pixel data, so truncation and damage surface here as :class:`CorruptImage`."""
    try:
        image.load()
    except _DECODE_ERRORS as exc:
        name = (image.format or "image").upper()
        if "truncated" in str(exc):
            raise CorruptImage(f"the {name} data is truncated ({exc})") from exc
        raise CorruptImage(f"the {name} data is damaged ({exc})") from exc


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation of a loaded image, 1 when absent or unreadable."""
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block must not cost the picture; it only loses the rotation
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _pillow_to_array(image: Image.Image) -> np.ndarray:
    """Normalise any supported Pillow mode to (h, w, 1|3|4) uint8, or (h, w, 1) uint16 for 16-bit grey."""
    mode = image.mode
    if mode in _GREY16:
        grey = np.asarray(image)
        return np.clip(grey, 0, 65535).astype(np.uint16)[:, :, None]
    if mode == "P":
        has_alpha = "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    elif mode in _TO_RGBA:
        image = image.convert("RGBA")
    elif mode in _TO_RGB:
        image = image.convert("RGB")
    elif mode in _TO_GREY:
        image = image.convert("L")
    else:
        raise UnsupportedImage(f"colour mode {mode} is not supported")
    array = np.asarray(image)
    return array[:, :, None] if array.ndim == 2 else array


def _decode_png16(data: bytes) -> np.ndarray:
    """All 16 bits of a colour PNG, as (h, w, 3|4) RGB(A) uint16."""
    _refuse_png_data_overrun(data)
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise CorruptImage("the 16-bit PNG data cannot be decoded")
    if array.ndim == 2:
        return array[:, :, None]
    code = cv2.COLOR_BGRA2RGBA if array.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(array, code)


def _refuse_png_data_overrun(data: bytes) -> None:
    """:class:`CorruptImage` when a PNG's pixel data inflates to more than its header announces.

    OpenCV's PNG reader inflates every IDAT byte, also past the last row, so a small file holding
    a zlib bomb behind a small header would cost minutes of CPU (1 MB of file, 1 GB of zeros, 5 s
    here); Pillow stops at the last row. Measured in pieces that are thrown away, the count stops
    as soon as it passes what the header announces, so neither memory nor time grows with the bomb.
    """
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    bits = depth * _PNG_CHANNELS.get(colour, 4)
    expected = 0
    for x0, y0, dx, dy in _ADAM7 if interlace else ((0, 0, 1, 1),):
        columns, rows = -(-max(width - x0, 0) // dx), -(-max(height - y0, 0) // dy)
        if columns and rows:
            expected += rows * (1 + (columns * bits + 7) // 8)  # each row starts with its filter byte
    inflater = zlib.decompressobj()
    produced = 0
    try:
        for body in _png_chunks(data, b"IDAT"):
            for start in range(0, len(body), _FEED_PIECE):
                pending: bytes | memoryview = body[start : start + _FEED_PIECE]
                while pending and not inflater.eof:
                    produced += len(inflater.decompress(pending, _INFLATE_PIECE))
                    if produced > expected:
                        raise CorruptImage(
                            f"the PNG data inflates to more than the {expected} bytes its {width}x{height} "
                            "header announces"
                        )
                    pending = inflater.unconsumed_tail
    except zlib.error as exc:
        raise CorruptImage(f"the 16-bit PNG data is damaged ({exc})") from exc


def _png_chunks(data: bytes, kind: bytes) -> Iterator[memoryview]:
    """The bodies of a PNG's chunks of one ``kind``, in order, without copying them."""
    view = memoryview(data)
    offset = 8  # after the signature
    while offset + 8 <= len(data):
        length, found = struct.unpack(">I4s", view[offset : offset + 8])
        if found == kind:
            yield view[offset + 8 : offset + 8 + length]
        offset += 12 + length  # length, type, body, CRC


def _too_many(width: int, height: int, max_pixels: int) -> str:
    return (
        f"the image is {width}x{height} = {width * height / 1e6:.1f} megapixels, "
        f"more than the limit of {max_pixels / 1e6:g} megapixels"
    )


# -- encoding helpers -------------------------------------------------------------------------


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        return ((pixels.astype(np.float32) / 257.0).round()).astype(np.uint8)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _flatten_on_white(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[:, :, 3:4].astype(np.float32) / 255.0
    rgb = rgba[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _to_pillow(pixels: np.ndarray) -> Image.Image:
    channels = pixels.shape[2]
    if channels == 1:
        return Image.fromarray(pixels[:, :, 0], "L")
    return Image.fromarray(np.ascontiguousarray(pixels), "RGBA" if channels == 4 else "RGB")


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _encode_png16(pixels: np.ndarray) -> bytes:
    channels = pixels.shape[2]
    if channels == 1:
        bgr = pixels[:, :, 0]
    elif channels == 4:
        bgr = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA)
    else:
        bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".png", bgr)
    if not ok:  # pragma: no cover - OpenCV fails only on invalid arrays, which we never build
        raise RuntimeError("OpenCV could not encode a 16-bit PNG")
    return buffer.tobytes()
