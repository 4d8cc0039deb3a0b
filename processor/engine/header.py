"""What an image file says about itself before any pixel is decoded: format, size, bit depth.

:func:`read_header` is the one place the pixel limits are checked from (the decoder calls it
first, and other checks, such as an output-size limit, can call it too). JPEG, PNG and WebP sizes
come from Pillow's lazy open (header only). HEIC and AVIF are HEIF files: their sizes are read
from the ``ispe`` (image spatial extent) properties of the ``meta`` box here, without a codec, and
the largest one counts, so a small primary image cannot hide a huge tile grid, thumbnail or
auxiliary image from the limit.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

from photoenhance.formats import png_bit_depth, sniff_format
from processor.engine.errors import CorruptImage, TooManyPixels

__all__ = ["ImageHeader", "check_pixels", "read_header"]

#: Containers inside which HEIF keeps its item properties (``meta`` > ``iprp`` > ``ipco``).
_CONTAINERS = {b"meta": 4, b"iprp": 0, b"ipco": 0}

#: Pillow modes the decoder turns into one grey channel, and those that keep an alpha channel.
_GREY_MODES = {"1", "L", "I;16", "I;16L", "I;16B", "I;16N", "I"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}

#: Errors Pillow raises on a damaged header.
_HEADER_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)


@dataclass(frozen=True)
class ImageHeader:
    """A file's own account of its picture, read without decoding it."""

    #: A name of :data:`photoenhance.formats.SUPPORTED_FORMATS`.
    format: str
    #: Stored size (before EXIF orientation); for HEIF the largest image the file declares.
    width: int
    height: int
    #: Channels of the decoded layout: 1 (grey), 3 (RGB) or 4 (RGBA).
    channels: int = 3
    #: Bits per sample the file declares (8 when it says nothing).
    bit_depth: int = 8
    #: Whether the file embeds an ICC profile (its colours may need converting, and keeping
    #: what sRGB clips costs memory: :mod:`processor.engine.colour`).
    has_profile: bool = False

    @property
    def pixels(self) -> int:
        """``width * height``."""
        return self.width * self.height

    @property
    def bytes_per_sample(self) -> int:
        """1 (decoded as uint8) or 2 (uint16: anything deeper than 8 bits)."""
        return 2 if self.bit_depth > 8 else 1


def read_header(data: bytes, *, max_pixels: int | None = None) -> ImageHeader:
    """The :class:`ImageHeader` of ``data``; typed :class:`ImageError` when it is not a supported image
    or its header cannot be read, and :class:`TooManyPixels` past ``max_pixels`` when given."""
    header = _read_header(data)
    if max_pixels is not None:
        check_pixels(header, max_pixels)
    return header


def _read_header(data: bytes) -> ImageHeader:
    fmt = sniff_format(data)
    if fmt in {"heic", "avif"}:
        return _heif_header(data, fmt)
    try:
        with warnings.catch_warnings():
            # Our own limit applies; Pillow's bomb warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[fmt.upper()]) as image:
                width, height = image.size
                channels = _channels(image)
                has_profile = bool(image.info.get("icc_profile"))
    except Image.DecompressionBombError as exc:
        raise TooManyPixels(f"the header announces an enormous image ({exc})") from exc
    except Image.UnidentifiedImageError as exc:
        raise CorruptImage(f"the {fmt.upper()} header is damaged and cannot be read") from exc
    except _HEADER_ERRORS as exc:
        raise CorruptImage(f"the {fmt.upper()} header is damaged: {exc}") from exc
    depth = png_bit_depth(data) if fmt == "png" else 8
    return ImageHeader(fmt, width, height, channels, 16 if depth == 16 else 8, has_profile)


def _channels(image: Image.Image) -> int:
    """Channels the decoder normalises ``image``'s mode to (see :mod:`processor.engine.imageio`)."""
    mode = image.mode
    if mode in _GREY_MODES:
        return 1
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        return 4
    return 3


def check_pixels(header: ImageHeader, max_pixels: int) -> None:
    """:class:`TooManyPixels` when the header declares more than ``max_pixels``."""
    if header.pixels > max_pixels:
        raise TooManyPixels(
            f"the image is {header.width}x{header.height} = {header.pixels / 1e6:.1f} megapixels, "
            f"more than the limit of {max_pixels / 1e6:g} megapixels"
        )


def _heif_header(data: bytes, fmt: str) -> ImageHeader:
    """Largest ``ispe`` size and deepest ``pixi`` depth of a HEIF file."""
    sizes: list[tuple[int, int]] = []
    depth = 8
    alpha = False
    profile = False
    for kind, body in _property_boxes(data):
        if kind == b"ispe" and len(body) >= 12:
            sizes.append(struct.unpack(">II", body[4:12]))  # after version and flags
        elif kind == b"auxC" and b"alpha" in body:
            alpha = True
        elif kind == b"colr" and body[:4] in (b"prof", b"rICC"):  # an embedded ICC profile
            profile = True
        elif kind == b"pixi" and len(body) >= 5:
            channels = body[4]
            bits = body[5:5 + channels]
            if bits:
                depth = max(depth, max(bits))
    if not sizes:
        raise CorruptImage(f"the {fmt.upper()} header is damaged: it declares no image size")
    width, height = max(sizes, key=lambda wh: wh[0] * wh[1])
    if width == 0 or height == 0:
        raise CorruptImage(f"the {fmt.upper()} header declares an empty {width}x{height} image")
    # An alpha plane is an auxiliary image; counting four channels when one is declared keeps the
    # memory estimate on the safe side.
    channels = 4 if alpha else 3
    return ImageHeader(fmt, width, height, channels, depth, profile)


def _property_boxes(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every box inside ``meta``/``iprp``/``ipco`` (type, body); stops quietly at damage."""
    yield from _walk(memoryview(data), 0, len(data), top=True)


def _walk(view: memoryview, start: int, end: int, *, top: bool) -> Iterator[tuple[bytes, bytes]]:
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack(">I4s", view[offset:offset + 8])
        header = 8
        if size == 1:
            if offset + 16 > end:
                return
            size = struct.unpack(">Q", view[offset + 8:offset + 16])[0]
            header = 16
        elif size == 0:
            size = end - offset
        if size < header or offset + size > end:
            size = end - offset  # cut short: read what is there
            if size < header:
                return
        if kind in _CONTAINERS:
            skip = _CONTAINERS[kind]
            yield from _walk(view, offset + header + skip, offset + size, top=False)
        elif not top:
            yield kind, bytes(view[offset + header:offset + size])
        offset += size
