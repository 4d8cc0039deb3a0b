"""Decompression bombs, built in memory in milliseconds: tiny files that claim or hold huge images.

Two kinds:

- **Header bombs**: a real small picture whose header is patched to claim enormous dimensions
  (PNG IHDR, JPEG SOF, WebP VP8/VP8L/VP8X), or the bare signature and header of a format the
  engine does not decode (GIF, BMP, TIFF). Decoding one would need gigabytes.
- **zlib bombs**: a PNG with an honest, small header whose compressed data inflates to far more
  than that header announces, and PNGs whose ICC profile or text chunk is a zlib bomb.

Also used by the memory probe that test_decompression_bombs.py runs in a fresh interpreter, so
everything here needs only numpy and Pillow.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

__all__ = ["HEADER_BOMBS", "UNDECODED_BOMBS", "ZLIB_BOMBS", "png", "zlib_zeros"]

#: Bytes of zeros one repeated deflate unit of :func:`zlib_zeros` stands for.
_UNIT = 1 << 20


def _small(fmt: str, **params: object) -> bytearray:
    """A 16x16 grey picture in ``fmt``: a well-formed file to patch."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(buffer, fmt, **params)
    return bytearray(buffer.getvalue())


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(
    width: int, height: int, idat: bytes, *, depth: int = 8, colour: int = 2, interlace: int = 0, before_idat: bytes = b""
) -> bytes:
    """A PNG with this IHDR and ``idat`` as its one IDAT chunk (colour 2 is RGB, 6 is RGBA)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + before_idat + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def zlib_zeros(inflated: int) -> bytes:
    """A zlib stream that inflates to ``inflated`` zero bytes (a multiple of 1 MiB), ~1000x smaller.

    Compressing gigabytes would take a minute, so one unit is compressed once and repeated: after
    a full flush a deflate stream refers to nothing before it, so the same bytes can follow
    themselves. The Adler-32 of n zeros is (n mod 65521) << 16 | 1.
    """
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    unit = raw.compress(bytes(_UNIT)) + raw.flush(zlib.Z_FULL_FLUSH)
    final = raw.flush(zlib.Z_FINISH)
    adler = ((inflated % 65521) << 16) | 1
    return b"\x78\xda" + unit * (inflated // _UNIT) + final + struct.pack(">I", adler)


def png_claiming(width: int, height: int, *, depth: int = 8) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` RGB with one compressed row behind it."""
    return png(width, height, zlib.compress(bytes(1 + 3 * depth // 8 * 16)), depth=depth)


def jpeg_claiming(width: int, height: int, *, progressive: bool = False) -> bytes:
    """A real JPEG whose start-of-frame claims ``width`` x ``height`` (65535 at most)."""
    data = _small("JPEG", progressive=progressive)
    at = 2
    while data[at + 1] not in (0xC0, 0xC1, 0xC2):  # walk the markers to the frame header
        at += 2 + struct.unpack(">H", data[at + 2 : at + 4])[0]
    struct.pack_into(">HH", data, at + 5, height, width)  # after marker, length and precision
    return bytes(data)


def webp_lossy_claiming(width: int, height: int) -> bytes:
    """A lossy WebP whose VP8 frame header claims ``width`` x ``height`` (16383 at most)."""
    data = _small("WEBP", quality=50)
    assert data[12:16] == b"VP8 "
    struct.pack_into("<HH", data, 26, width, height)  # after the chunk header, frame tag and start code
    return bytes(data)


def webp_lossless_claiming(width: int, height: int) -> bytes:
    """A lossless WebP whose VP8L header claims ``width`` x ``height`` (16384 at most)."""
    data = _small("WEBP", lossless=True)
    assert data[12:16] == b"VP8L"
    bits = struct.unpack("<I", data[21:25])[0] & ~0x0FFFFFFF  # keep alpha and version bits
    struct.pack_into("<I", data, 21, bits | (width - 1) | (height - 1) << 14)
    return bytes(data)


def webp_extended_claiming(width: int, height: int) -> bytes:
    """An extended WebP whose VP8X canvas claims ``width`` x ``height`` (2^24 at most)."""
    frame = webp_lossy_claiming(16, 16)[12:]
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes(4) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + frame
    return b"RIFF" + struct.pack("<I", len(body)) + body


def gif_claiming(width: int, height: int) -> bytes:
    screen = struct.pack("<HHBBB", width, height, 0, 0, 0)
    frame = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x4c\x01\x00"  # one LZW block
    return b"GIF89a" + screen + frame + b";"


def bmp_claiming(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def tiff_claiming(width: int, height: int) -> bytes:
    # Grey, 8 bits, one strip of one byte: width, length, bits, photometric, strip offset,
    # samples, rows per strip, strip byte count (tag, type, count, value).
    tags = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (262, 3, 1, 1), (273, 4, 1, 8),
            (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, 1)]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *tag) for tag in tags) + bytes(4)
    return b"II*\x00" + struct.pack("<I", 8) + ifd


#: Decodable formats whose header claims more pixels than any limit allows: name -> file.
HEADER_BOMBS: dict[str, bytes] = {
    "PNG 10000x6000 (60 MP)": png_claiming(10_000, 6_000),
    "PNG 30000x30000": png_claiming(30_000, 30_000),
    "PNG 65000x65000": png_claiming(65_000, 65_000),
    "PNG 2^31-1 square": png_claiming(2**31 - 1, 2**31 - 1),
    "16-bit PNG 10000x6000": png_claiming(10_000, 6_000, depth=16),
    "JPEG 10000x6000 (60 MP)": jpeg_claiming(10_000, 6_000),
    "JPEG 30000x30000": jpeg_claiming(30_000, 30_000),
    "JPEG 65000x65000": jpeg_claiming(65_000, 65_000),
    "progressive JPEG 65535x65535": jpeg_claiming(65_535, 65_535, progressive=True),
    "WebP lossy 9000x9000 (81 MP)": webp_lossy_claiming(9_000, 9_000),
    "WebP lossy 16383x16383": webp_lossy_claiming(16_383, 16_383),
    "WebP lossless 16384x16384": webp_lossless_claiming(16_384, 16_384),
    "WebP extended canvas 65536x65536": webp_extended_claiming(65_536, 65_536),
}

#: Formats the engine does not decode, with headers claiming 65000x65000: name -> file.
UNDECODED_BOMBS: dict[str, bytes] = {
    "GIF 65000x65000": gif_claiming(65_000, 65_000),
    "BMP 65000x65000": bmp_claiming(65_000, 65_000),
    "TIFF 65000x65000": tiff_claiming(65_000, 65_000),
}

#: Small, honest headers with a zlib bomb behind them (1 GiB of zeros each): name -> file.
ZLIB_BOMBS: dict[str, bytes] = {
    "8-bit PNG 64x64, 1 GiB of IDAT": png(64, 64, zlib_zeros(1 << 30)),
    "16-bit PNG 64x64, 1 GiB of IDAT": png(64, 64, zlib_zeros(1 << 30), depth=16),
    "PNG with a 1 GiB ICC profile": png(
        64, 64, zlib.compress(bytes(64 * 193)), before_idat=_chunk(b"iCCP", b"icc\x00\x00" + zlib_zeros(1 << 30))
    ),
    "PNG with a 1 GiB text chunk": png(
        64, 64, zlib.compress(bytes(64 * 193)), before_idat=_chunk(b"zTXt", b"note\x00\x00" + zlib_zeros(1 << 30))
    ),
}


def attack_png(edge: int = 7071) -> bytes:
    """The memory attack of issue 17: an honest RGB PNG of ``edge`` x ``edge`` zeros (~150 KB)
    that is within MAX_INPUT_PIXELS but, at upscale 4, asks for gigabytes of result."""
    packer = zlib.compressobj(9)
    row = bytes(1 + 3 * edge)
    return png(edge, edge, b"".join(packer.compress(row) for _ in range(edge)) + packer.flush())


def large_png(seed: int, edge: int = 1500) -> bytes:
    """An ``edge`` x ``edge`` RGB gradient: large but allowed (quick to encode, small to upload)."""
    y, x = np.mgrid[0:edge, 0:edge]
    pixels = np.stack([x % 256, y % 256, (x + y + seed) % 256], -1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()
