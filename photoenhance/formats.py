"""Recognise an image format from its first bytes, never from a file name or a declared type.

Uploaders name files freely and S3 stores whatever ``Content-Type`` they send, so the bytes are the
only evidence. Formats the engine decodes are JPEG, PNG, WebP, HEIC/HEIF and AVIF (the list is
:data:`photoenhance.contracts.formats.INPUT_FORMATS`); other well-known picture formats are named in
an :class:`UnsupportedImage` error so people learn what to convert, and anything else is
:class:`NotAnImage`.
"""

from __future__ import annotations

from photoenhance.contracts.failures import NotAnImage, UnsupportedImage
from photoenhance.contracts.formats import INPUT_FORMATS

__all__ = ["SUPPORTED_FORMATS", "png_bit_depth", "sniff_format"]

#: Formats :func:`sniff_format` returns.
SUPPORTED_FORMATS = tuple(f.name for f in INPUT_FORMATS)

#: How error messages list what to send.
_SEND = "send JPEG, PNG, WebP, HEIC or AVIF"

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

#: ISO base media ``ftyp`` brands (major or compatible) of the HEIF pictures we decode: AVIF
#: (AV1 inside HEIF) and HEIC (HEVC inside HEIF). ``mif1``/``msf1`` alone say only "HEIF", so the
#: compatible brands decide; a HEIF naming neither codec is left to the HEIF decoder.
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"heif",
                          b"mif1", b"msf1", b"mif2", b"miaf"})


def sniff_format(data: bytes) -> str:
    """Return a name of :data:`SUPPORTED_FORMATS` (``"jpeg"``, ``"png"``, ``"webp"``, ``"heic"``,
    ``"avif"``) for ``data``, or raise a typed error saying what it is."""
    if not data:
        raise NotAnImage("the file is empty (0 bytes)")
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    heif = _heif_kind(data)
    if heif is not None:
        return heif
    for prefix, offset, name in _KNOWN_UNSUPPORTED:
        if data[offset:offset + len(prefix)] == prefix:
            raise UnsupportedImage(f"{name} images are not supported; {_SEND}")
    head = data[:1024].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        raise UnsupportedImage(f"SVG (vector) images are not supported; {_SEND}")
    raise NotAnImage(f"the data is not a JPEG, PNG, WebP, HEIC or AVIF image (starts with {_describe_start(data)})")


def _heif_kind(data: bytes) -> str | None:
    """``"avif"`` or ``"heic"`` for a HEIF file whose leading ``ftyp`` box names a picture brand."""
    if len(data) < 16 or data[4:8] != b"ftyp":
        return None
    size = int.from_bytes(data[:4], "big")
    if not 16 <= size <= min(len(data), 4096) or size % 4:
        size = min(len(data), 16)  # damaged or cut short: the major brand still tells
    brands = {data[8:12]} | {data[i:i + 4] for i in range(16, size, 4)}
    if brands & _AVIF_BRANDS:
        return "avif"
    if brands & _HEIC_BRANDS:
        return "heic"
    return None


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
