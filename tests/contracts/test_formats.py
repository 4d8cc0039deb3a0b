"""Format sniffing: the bytes decide, and each kind of non-image gets its named error."""

from __future__ import annotations

import pytest

from photoenhance.contracts.failures import NotAnImage, UnsupportedImage
from photoenhance.formats import png_bit_depth, sniff_format


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "png"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "webp"),
    ],
)
def test_supported_formats_are_recognised_by_their_signature(head: bytes, expected: str) -> None:
    assert sniff_format(head + b"\x00" * 32) == expected


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"GIF89a\x01\x00\x01\x00", "GIF"),
        (b"BM\x00\x00\x00\x00", "BMP"),
        (b"II*\x00\x08\x00\x00\x00", "TIFF"),
        (b"MM\x00*\x00\x00\x00\x08", "TIFF"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "HEIC"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00", "AVIF"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
    ],
)
def test_known_picture_formats_are_unsupported_and_named(data: bytes, name: str) -> None:
    with pytest.raises(UnsupportedImage) as info:
        sniff_format(data)
    assert info.value.code == "unsupported_format"
    assert name in info.value.reason


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, world\n", b"%PDF-1.7\n", b"\x00\x01\x02\x03\x04", b"RIFF\x00\x00\x00\x00WAVEfmt "],
)
def test_everything_else_is_not_an_image(data: bytes) -> None:
    with pytest.raises(NotAnImage) as info:
        sniff_format(data)
    assert info.value.code == "not_an_image"
    assert info.value.reason


def test_empty_input_says_it_is_empty() -> None:
    with pytest.raises(NotAnImage, match="empty"):
        sniff_format(b"")


def test_png_bit_depth_reads_the_ihdr_chunk() -> None:
    ihdr = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0d" + b"IHDR" + b"\x00\x00\x00\x10" * 2
    assert png_bit_depth(ihdr + bytes([16, 2, 0, 0, 0])) == 16
    assert png_bit_depth(ihdr + bytes([8, 6, 0, 0, 0])) == 8
