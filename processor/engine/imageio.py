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
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pillow_heif
from PIL import Image, PngImagePlugin, features

from photoenhance.contracts.formats import OUTPUT_CONTENT_TYPES, resolve_output_format
from photoenhance.contracts.keys import OUTPUT_EXTENSIONS
from photoenhance.contracts.options import EnhanceOptions, OutputFormat
from photoenhance.formats import png_bit_depth
from processor.engine.colour import SRGB_ICC, GamutResidual, from_srgb_with_gamut, gamut_residual, to_srgb
from processor.engine.errors import CorruptImage, OutputTooLarge, TooManyPixels, UnsupportedImage
from processor.engine.header import ImageHeader, check_pixels, read_header
from processor.engine.metadata import SourceMetadata, read_exif, result_exif, result_xmp

__all__ = [
    "DecodedImage",
    "EncodedImage",
    "ImageHeader",
    "apply_orientation",
    "decode_image",
    "encode_image",
    "output_format_for",
    "read_header",
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
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, zlib.error, TypeError, RuntimeError)

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
    #: ``"jpeg"``, ``"png"``, ``"webp"``, ``"heic"`` or ``"avif"``, from the bytes.
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
    #: Profile, EXIF and XMP to carry to the result.
    metadata: SourceMetadata = field(default_factory=SourceMetadata)
    #: What decoding did that the report should say: ``colour_profile`` (converted, none, kept,
    #: ignored with a ``reason``), ``exif`` when dropped, ``images_in_file`` for multi-image files.
    notes: dict[str, Any] = field(default_factory=dict)
    #: The colours the conversion to sRGB clipped (wide-gamut inputs only): the result is taken
    #: back into the input's profile with them added (:mod:`processor.engine.colour`).
    gamut: GamutResidual | None = None

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

    The pixel count is checked from the header (:func:`~processor.engine.header.read_header`),
    before decoding, against ``max_pixels``. HEIC files and animated AVIF give their primary image
    (the first frame); ``notes["images_in_file"]`` says how many the file held. 8-bit pixels with an
    embedded ICC profile are converted to sRGB (:mod:`processor.engine.colour`).
    """
    header = read_header(data)
    check_pixels(header, max_pixels)
    fmt = header.format
    if fmt == "heic":
        return _decode_heic(data, header)
    image = _open(data, fmt)
    try:
        width, height = image.size
        if width * height > max_pixels:
            raise TooManyPixels(_too_many(width, height, max_pixels))
        mode = image.mode
        frames = int(getattr(image, "n_frames", 1) or 1)
        _load(image)
        orientation = _orientation(image)
        info = dict(image.info)
        gamut: GamutResidual | None = None
        if fmt == "png" and png_bit_depth(data) == 16 and mode not in _GREY16:
            # Pillow keeps only 8 of the 16 bits of colour PNGs; OpenCV keeps all of them.
            pixels, colour = _decode_png16(data), None
        elif fmt == "avif" and header.bit_depth > 8:
            # Pillow's AVIF decoder gives 8 bits; libavif through imagecodecs gives all of them.
            pixels, colour = _decode_avif_deep(data, header.bit_depth), None
        elif mode in _GREY16:
            pixels, colour = _pillow_to_array(image), None
        else:
            pixels, colour, gamut = _to_srgb_array(image, info.get("icc_profile"))
    finally:
        image.close()
    pixels = apply_orientation(pixels, orientation)
    return _decoded(pixels, fmt, mode, orientation, info, colour, frames, _upright(gamut, orientation))


def _decoded(pixels: np.ndarray, fmt: str, mode: str, orientation: int, info: dict[str, Any],
             colour: dict[str, str] | None, frames: int, gamut: GamutResidual | None = None) -> DecodedImage:
    """The :class:`DecodedImage` of normalised pixels; ``colour`` is None for samples kept in their
    own profile (16-bit), else the note of the sRGB conversion; ``gamut`` what that clipped."""
    icc = info.get("icc_profile") or None
    if colour is None:
        colour = {"colour_profile": "kept", "reason": "16-bit samples keep their own profile"} if icc else \
            {"colour_profile": "none"}
        out_icc = icc
    elif gamut is not None:
        # Wide colours the sRGB step clipped come back: the result is in the input's profile.
        colour = {**colour, "result_profile": "the input's (its colours exceed sRGB)"}
        out_icc = gamut.icc
    else:
        # Converted, untagged (taken as sRGB) or ignored (processed as sRGB): sRGB is embedded,
        # except in grey results, which an RGB profile does not fit.
        out_icc = SRGB_ICC if pixels.shape[2] >= 3 else None
    raw_exif = info.get("exif") or None
    notes: dict[str, Any] = dict(colour)
    if raw_exif is not None and read_exif(raw_exif) is None:
        notes["exif"] = "dropped: the EXIF block could not be read"
        raw_exif = None
    if frames > 1:
        notes["images_in_file"] = frames
        notes["used"] = "primary image only"
    xmp = info.get("xmp") or info.get("XML:com.adobe.xmp") or None
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    return DecodedImage(
        pixels=pixels,
        source_format=fmt,
        width=pixels.shape[1],
        height=pixels.shape[0],
        has_alpha=pixels.shape[2] == 4,
        bit_depth=16 if pixels.dtype == np.uint16 else 8,
        source_mode=mode,
        orientation=orientation,
        metadata=SourceMetadata(icc_profile=out_icc, exif=raw_exif, xmp=xmp),
        notes=notes,
        gamut=gamut,
    )


def _upright(gamut: GamutResidual | None, orientation: int) -> GamutResidual | None:
    """The residual turned upright like the pixels it belongs to."""
    if gamut is None or orientation == 1:
        return gamut
    return GamutResidual(np.ascontiguousarray(apply_orientation(gamut.codes, orientation)), gamut.icc)


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


def output_format_for(options: EnhanceOptions, source_format: str | None) -> OutputFormat:
    """The format a result is written in: the options' own, or for ``auto`` the one
    :func:`~photoenhance.contracts.formats.resolve_output_format` picks for ``source_format``."""
    return OutputFormat(resolve_output_format(options.output_format.value, source_format))


def encode_image(pixels: np.ndarray, options: EnhanceOptions, source: DecodedImage | None = None) -> EncodedImage:
    """Encode ``(h, w, c)`` RGB(A)/grey pixels in the output format the options ask for (``auto``:
    decided by ``source``'s format).

    JPEG has no alpha: transparent areas are composited onto white. JPEG, WebP and AVIF hold 8
    bits here, so 16-bit pixels are reduced (rounded, 65535 -> 255); PNG keeps 16 bits. With a
    ``source``, the result carries its profile, its EXIF rewritten for the result
    (:func:`~processor.engine.metadata.result_exif`: orientation 1, new dimensions and resolution,
    no thumbnail, no GPS unless ``keep_gps``) and its XMP, as far as the container holds them.
    """
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if source is not None and source.gamut is not None and pixels.dtype == np.uint8 and pixels.shape[2] >= 3:
        pixels = from_srgb_with_gamut(pixels, source.gamut)  # into the input's profile, clipped colours back
    fmt = output_format_for(options, source.source_format if source is not None else None)
    height, width = pixels.shape[:2]
    limit = _WEBP_MAX_EDGE if fmt is OutputFormat.WEBP else _JPEG_MAX_EDGE
    if max(width, height) > limit:
        raise OutputTooLarge(
            f"the result would be {width}x{height}, larger than {fmt.value.upper()} can hold "
            f"({limit} pixels per edge); choose a smaller upscale or another format"
        )
    meta = _result_metadata(source, width, height, options.keep_gps)
    content_type, extension = OUTPUT_CONTENT_TYPES[fmt.value], OUTPUT_EXTENSIONS[fmt.value][1:]
    if fmt is OutputFormat.PNG:
        if pixels.dtype == np.uint16:
            return EncodedImage(_encode_png16(pixels, meta), content_type, extension)
        buffer = _save(_to_pillow(_to_uint8(pixels)), "PNG", compress_level=6, **_png_params(meta))
        return EncodedImage(buffer, content_type, extension)
    eight = _to_uint8(pixels)
    if fmt is OutputFormat.JPEG:
        if eight.shape[2] == 4:
            eight = _flatten_on_white(eight)
        data = _save(_to_pillow(eight), "JPEG", quality=options.output_quality, optimize=True, **meta)
        return EncodedImage(data, content_type, extension)
    if eight.shape[2] == 1:  # WebP and AVIF results are RGB(A)
        eight = np.repeat(eight, 3, axis=2)
    if fmt is OutputFormat.AVIF:
        if not features.check("avif"):
            raise UnsupportedImage("this worker's Pillow cannot write AVIF; choose another output format")
        data = _save(_to_pillow(eight), "AVIF", quality=options.output_quality, **meta)
        return EncodedImage(data, content_type, extension)
    data = _save(_to_pillow(eight), "WEBP", quality=options.output_quality, method=4, **meta)
    return EncodedImage(data, content_type, extension)


def _png_params(meta: dict[str, bytes]) -> dict[str, object]:
    """Pillow's PNG writer takes XMP only as an ``iTXt`` chunk of its own name."""
    params: dict[str, object] = {k: v for k, v in meta.items() if k != "xmp"}
    if "xmp" in meta:
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", meta["xmp"].decode("utf-8", "replace"))
        params["pnginfo"] = info
    return params


def _result_metadata(source: DecodedImage | None, width: int, height: int, keep_gps: bool) -> dict[str, bytes]:
    """Pillow save parameters (``icc_profile``, ``exif``, ``xmp``) for a result of ``width`` x ``height``.

    A grey result gets no RGB profile (it would not fit); every container here holds the rest.
    """
    if source is None:
        return {}
    meta = source.metadata
    out: dict[str, bytes] = {}
    if meta.icc_profile and (source.pixels.shape[2] >= 3 or meta.icc_profile[16:20] == b"GRAY"):
        out["icc_profile"] = meta.icc_profile
    exif = result_exif(meta.exif, width=width, height=height, scale=width / max(source.width, 1),
                       keep_gps=keep_gps)
    if exif:
        out["exif"] = exif
    xmp = result_xmp(meta.xmp, keep_gps=keep_gps)
    if xmp:
        out["xmp"] = xmp
    return out


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


def _decode_heic(data: bytes, header: ImageHeader) -> DecodedImage:
    """The primary image of a HEIC file, 10/12-bit samples widened to 16 bits.

    libheif applies the file's rotation and mirroring (``irot``/``imir``) itself, so EXIF
    orientation is not applied again.
    """
    try:
        gamut: GamutResidual | None = None
        heif = pillow_heif.open_heif(data, convert_hdr_to_8bit=False)
        frames = len(heif)
        info = dict(heif.info)
        depth = int(info.get("bit_depth") or 8)
        if depth > 8:
            mode = f"{heif.mode}"
            pixels = _widen(np.asarray(heif), depth)
            if pixels.ndim == 2:
                pixels = pixels[:, :, None]
            colour = None
        else:
            image = heif.to_pillow()
            mode = image.mode
            pixels, colour, gamut = _to_srgb_array(image, info.get("icc_profile"))
    except (ValueError, RuntimeError, OSError, EOFError, SyntaxError) as exc:
        if "runcat" in str(exc) or "end of" in str(exc).lower():
            raise CorruptImage(f"the HEIC data is truncated ({exc})") from exc
        raise CorruptImage(f"the HEIC data is damaged ({exc})") from exc
    return _decoded(pixels, header.format, mode, 1, info, colour, frames, gamut)


def _widen(samples: np.ndarray, depth: int) -> np.ndarray:
    """``depth``-bit samples stored in the top bits of uint16 (pillow-heif), or in the low bits
    (libavif), scaled to the full 16-bit range: 1023 -> 65535, 512 -> 32800."""
    samples = samples.astype(np.uint32)
    top = (1 << depth) - 1
    if samples.max(initial=0) > top:  # stored shifted up
        samples >>= 16 - depth
    return ((samples * 65535 + top // 2) // top).astype(np.uint16)


def _decode_avif_deep(data: bytes, depth: int) -> np.ndarray:
    """All bits of a 10- or 12-bit AVIF, as (h, w, 1|3|4) uint16 over the full range."""
    try:
        import imagecodecs  # only deep AVIF needs it

        samples = imagecodecs.avif_decode(data)
    except Exception as exc:  # imagecodecs raises its own error types
        raise CorruptImage(f"the AVIF data is damaged ({exc})") from exc
    pixels = _widen(np.asarray(samples), depth)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def _to_srgb_array(
    image: Image.Image, icc: bytes | None
) -> tuple[np.ndarray, dict[str, str], GamutResidual | None]:
    """8-bit pixels of a loaded Pillow image, converted into sRGB from ``icc``, the note, and the
    residual of the colours that conversion clipped (None when nothing was clipped)."""
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in {"RGBa", "La", "PA"}:
        image = image.convert("RGBA")
    elif mode in {"RGBX", "YCbCr"}:
        image = image.convert("RGB")
    elif mode == "1":
        image = image.convert("L")
    converted, note = to_srgb(image, icc)
    pixels = _pillow_to_array(converted)
    gamut = gamut_residual(image, pixels, icc) if icc and note["colour_profile"] == "converted" else None
    return pixels, note, gamut


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


#: Save parameters that carry the input's metadata (never needed for the picture itself).
_METADATA_PARAMS = ("icc_profile", "exif", "xmp", "pnginfo")


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    """Encode with Pillow; metadata the container refuses (a JPEG segment holds 64 KiB: a camera's
    huge XMP or EXIF) is left out rather than costing the result."""
    buffer = io.BytesIO()
    try:
        image.save(buffer, fmt, **params)
    except (ValueError, OSError, struct.error):
        if not any(name in params for name in _METADATA_PARAMS):
            raise
        buffer = io.BytesIO()
        image.save(buffer, fmt, **{k: v for k, v in params.items() if k not in _METADATA_PARAMS})
    return buffer.getvalue()


def _encode_png16(pixels: np.ndarray, meta: dict[str, bytes]) -> bytes:
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
    return _png_with_metadata(buffer.tobytes(), meta)


def _png_with_metadata(png: bytes, meta: dict[str, bytes]) -> bytes:
    """``png`` with ``iCCP``, ``eXIf`` and an XMP ``iTXt`` chunk after its header (OpenCV writes none).

    PNG wants the profile before the image data; the chunks go right after IHDR (8 + 25 bytes).
    """
    chunks = []
    if "icc_profile" in meta:
        chunks.append(_png_chunk(b"iCCP", b"icc\0\0" + zlib.compress(meta["icc_profile"])))
    if "exif" in meta:
        exif = meta["exif"]
        chunks.append(_png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif))
    if "xmp" in meta:
        chunks.append(_png_chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + meta["xmp"]))
    return png[:33] + b"".join(chunks) + png[33:]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
