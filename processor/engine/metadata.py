"""What a result keeps of its input's metadata: EXIF (rewritten to fit the result) and XMP.

Kept: every EXIF tag (date taken, camera, lens, exposure, copyright ...) except what would now be
wrong. Rewritten: the orientation is 1 (the pixels were turned upright on decoding), the pixel
dimensions are the result's, the resolution is scaled with the pixels (the print size stays the
same). Dropped: the embedded thumbnail (IFD1; it shows the old picture), and the GPS position
unless the batch asks ``keep_gps``. EXIF that does not parse is dropped whole, never fatal.
XMP is carried with its orientation reset and, unless ``keep_gps``, its ``exif:GPS*`` properties
removed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from PIL import Image, TiffImagePlugin

__all__ = ["SourceMetadata", "read_exif", "result_exif", "result_xmp"]

_ORIENTATION = 0x0112
_X_RESOLUTION, _Y_RESOLUTION = 0x011A, 0x011B
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_PIXEL_X, _PIXEL_Y = 0xA002, 0xA003
#: IFD0 tags that point at an embedded thumbnail (only IFD1 should hold them).
_THUMBNAIL_TAGS = (0x0201, 0x0202)

_XMP_ORIENTATION = re.compile(rb'(tiff:Orientation\s*=\s*["\'])\d(["\'])|(<tiff:Orientation>)\d(</tiff:Orientation>)')
_XMP_GPS_ATTRIBUTE = re.compile(rb'\s+exif:GPS\w+\s*=\s*"[^"]*"')
_XMP_GPS_ELEMENT = re.compile(rb"<exif:(GPS\w+)\b[^>]*?(?:/>|>.*?</exif:\1>)", re.S)


@dataclass(frozen=True)
class SourceMetadata:
    """Metadata read from an input file, as bytes ready to be written again."""

    #: The ICC profile the decoded pixels are in (sRGB after conversion; the file's own for 16-bit).
    icc_profile: bytes | None = None
    #: The raw EXIF block (TIFF structure, with or without the ``Exif\\0\\0`` prefix).
    exif: bytes | None = None
    xmp: bytes | None = None


def read_exif(raw: bytes | None) -> Image.Exif | None:
    """Parse an EXIF block; None when absent or unparseable (the caller notes it dropped)."""
    if not raw:
        return None
    exif = Image.Exif()
    try:
        exif.load(raw)
        dict(exif)  # parse every IFD0 entry now, so damage surfaces here
        exif.get_ifd(_EXIF_IFD)
    except Exception:  # any damage: the block is dropped, the picture is not
        return None
    return exif if len(exif) else None


def result_exif(raw: bytes | None, *, width: int, height: int, scale: float, keep_gps: bool) -> bytes | None:
    """The EXIF block for a result of ``width`` x ``height`` made at ``scale`` times the input's
    size; None when ``raw`` is absent or does not parse."""
    exif = read_exif(raw)
    if exif is None:
        return None
    try:
        exif[_ORIENTATION] = 1
        sub = exif.get_ifd(_EXIF_IFD)
        if sub:
            sub[_PIXEL_X] = width
            sub[_PIXEL_Y] = height
        for tag in (_X_RESOLUTION, _Y_RESOLUTION):
            value = exif.get(tag)
            if value is not None and float(value) > 0:
                exif[tag] = TiffImagePlugin.IFDRational(Fraction(float(value) * scale).limit_denominator(10000))
        for tag in _THUMBNAIL_TAGS:
            exif.pop(tag, None)
        if not keep_gps:
            exif.pop(_GPS_IFD, None)
        return exif.tobytes()
    except Exception:  # a tag Pillow read but cannot write again: drop the block, keep the picture
        return None


def result_xmp(xmp: bytes | None, *, keep_gps: bool) -> bytes | None:
    """The XMP packet for a result: orientation 1, GPS properties removed unless ``keep_gps``."""
    if not xmp:
        return None
    out = _XMP_ORIENTATION.sub(lambda m: (m.group(1) or m.group(3)) + b"1" + (m.group(2) or m.group(4)), xmp)
    if not keep_gps:
        out = _XMP_GPS_ELEMENT.sub(b"", _XMP_GPS_ATTRIBUTE.sub(b"", out))
    return out
