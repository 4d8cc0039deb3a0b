"""Recognise an image format from its first bytes, never from a file name or a declared type.

Uploaders name files freely and S3 stores whatever ``Content-Type`` they send, so the bytes are the
only evidence. Formats the engine decodes are JPEG, PNG and WebP; other well-known picture formats are
named in an :class:`UnsupportedImage` error so people learn what to convert, and anything else is
:class:`NotAnImage`.
"""

from __future__ import annotations

from photoenhance.contracts.failures import NotAnImage, UnsupportedImage

__all__ = ["SUPPORTED_FORMATS", "png_bit_depth", "sniff_format"]

#: Formats :func:`sniff_format` returns.
SUPPORTED_FORMATS = ("jpeg", "png", "webp")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: Signatures of picture formats we recognise but do not decode: (prefix, offset, name).
_KNOWN_UNSUPPORTED: tuple[tuple[bytes, int, str], ...] = (
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"\x00\x00\x01\x00", 0, "ICO"),
    (b"8BPS", 0, "Photoshop PSD"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", 0, "JPEG 2000"),
    (b"\xff\x4f\xff\x51", 0, "JPEG 2000"),
    (b"\xff\x0a", 0, "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", 0, "JPEG XL"),
    (b"qoif", 0, "QOI"),
)

#: ISO base media ``ftyp`` brands that carry still pictures.
_FTYP_BRANDS = {
    b"heic": "HEIC",
    b"heix": "HEIC",
    b"hevc": "HEIC",
    b"heif": "HEIF",
    b"mif1": "HEIF",
    b"msf1": "HEIF",
    b"avif": "AVIF",
    b"avis": "AVIF",
}


def sniff_format(data: bytes) -> str:
    """Return ``"jpeg"``, ``"png"`` or ``"webp"`` for ``data``, or raise a typed error saying what it is."""
    if not data:
        raise NotAnImage("the file is empty (0 bytes)")
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for prefix, offset, name in _KNOWN_UNSUPPORTED:
        if data[offset:offset + len(prefix)] == prefix:
            raise UnsupportedImage(f"{name} images are not supported; send JPEG, PNG or WebP")
    if len(data) >= 12 and data[4:8] == b"ftyp" and data[8:12] in _FTYP_BRANDS:
        name = _FTYP_BRANDS[data[8:12]]
        raise UnsupportedImage(f"{name} images are not supported; send JPEG, PNG or WebP")
    head = data[:1024].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        raise UnsupportedImage("SVG (vector) images are not supported; send JPEG, PNG or WebP")
    raise NotAnImage(f"the data is not a JPEG, PNG or WebP image (starts with {_describe_start(data)})")


def png_bit_depth(data: bytes) -> int:
    """Bits per sample that a PNG's IHDR chunk announces (1, 2, 4, 8 or 16); 8 when unreadable.

    Pillow reduces 16-bit colour PNGs to 8 bits on decoding, so the decoder asks first.
    """
    # Signature (8) + chunk length (4) + b"IHDR" (4) + width (4) + height (4) -> bit depth at 24.
    if len(data) > 25 and data[12:16] == b"IHDR":
        return data[24]
    return 8


def _describe_start(data: bytes) -> str:
    """A short, safe description of the first bytes for an error message."""
    head = data[:8]
    if all(32 <= b < 127 for b in head):
        return repr(head.decode("ascii"))
    return head.hex(" ")
