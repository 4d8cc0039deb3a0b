"""Decoding and encoding: one pixel layout out of every supported mode, typed errors for the rest."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from photoenhance.contracts.options import EnhanceOptions, OutputFormat
from processor.engine.errors import CorruptImage, NotAnImage, OutputTooLarge, TooManyPixels, UnsupportedImage
from processor.engine.imageio import apply_orientation, decode_image, encode_image

MAX = 50_000_000


def _gradient(height: int = 24, width: int = 32) -> np.ndarray:
    """An RGB picture whose every pixel differs, so a wrong rotation or flip cannot pass."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 7 % 256, y * 11 % 256, (x + 3 * y) % 256], axis=2).astype(np.uint8)


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG announcing ``width`` x ``height`` whose pixel data is one compressed row, then nothing."""
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + _chunk(b"IDAT", zlib.compress(b"\x00" * 16))


# -- decoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_lossless_formats_decode_to_the_exact_rgb_pixels(fmt: str) -> None:
    pixels = _gradient()
    params = {"lossless": True} if fmt == "WEBP" else {}
    decoded = decode_image(_save(Image.fromarray(pixels), fmt, **params), max_pixels=MAX)
    assert decoded.source_format == fmt.lower()
    assert (decoded.width, decoded.height, decoded.bit_depth, decoded.has_alpha) == (32, 24, 8, False)
    np.testing.assert_array_equal(decoded.pixels, pixels)


def test_jpeg_decodes_to_rgb_order() -> None:
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 230
    decoded = decode_image(_save(Image.fromarray(red), "JPEG", quality=95), max_pixels=MAX)
    assert decoded.source_format == "jpeg"
    assert decoded.pixels.shape == (16, 16, 3) and decoded.pixels.dtype == np.uint8
    assert decoded.pixels[8, 8, 0] > 200 and decoded.pixels[8, 8, 2] < 40


def test_format_comes_from_the_bytes_not_from_any_name() -> None:
    png = _save(Image.fromarray(_gradient()), "PNG")
    assert decode_image(png, max_pixels=MAX).source_format == "png"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow_does(orientation: int) -> None:
    image = Image.fromarray(_gradient(10, 16))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _save(image, "PNG", exif=exif)
    decoded = decode_image(data, max_pixels=MAX)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    np.testing.assert_array_equal(decoded.pixels, expected)
    assert decoded.orientation == orientation
    assert (decoded.height, decoded.width) == expected.shape[:2]


def test_jpeg_rotated_by_exif_comes_out_upright() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_image(_save(Image.fromarray(_gradient(10, 16)), "JPEG", exif=exif), max_pixels=MAX)
    assert (decoded.width, decoded.height) == (10, 16)


def test_apply_orientation_ignores_unknown_values() -> None:
    pixels = _gradient(4, 6)
    assert apply_orientation(pixels, 0) is pixels
    assert apply_orientation(pixels, 9) is pixels


def test_greyscale_stays_one_channel() -> None:
    grey = _gradient()[..., 0]
    decoded = decode_image(_save(Image.fromarray(grey, "L"), "PNG"), max_pixels=MAX)
    assert decoded.pixels.shape == (24, 32, 1)
    np.testing.assert_array_equal(decoded.pixels[..., 0], grey)


def test_rgba_keeps_its_alpha() -> None:
    rgba = np.dstack([_gradient(), np.linspace(0, 255, 24 * 32).reshape(24, 32).astype(np.uint8)])
    decoded = decode_image(_save(Image.fromarray(rgba, "RGBA"), "PNG"), max_pixels=MAX)
    assert decoded.has_alpha and decoded.pixels.shape == (24, 32, 4)
    np.testing.assert_array_equal(decoded.pixels, rgba)


def test_palette_with_transparency_becomes_rgba_and_without_becomes_rgb() -> None:
    palette = Image.fromarray(_gradient()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    assert decode_image(_save(palette, "PNG"), max_pixels=MAX).pixels.shape[2] == 3
    transparent = decode_image(_save(palette, "PNG", transparency=0), max_pixels=MAX)
    assert transparent.has_alpha


def test_grey_with_alpha_becomes_rgba() -> None:
    la = Image.fromarray(np.dstack([_gradient()[..., 0], np.full((24, 32), 128, np.uint8)]), "LA")
    decoded = decode_image(_save(la, "PNG"), max_pixels=MAX)
    assert decoded.pixels.shape == (24, 32, 4)
    assert decoded.pixels[0, 0, 3] == 128


@pytest.mark.parametrize("channels", [3, 4])
def test_sixteen_bit_colour_png_keeps_all_sixteen_bits(channels: int) -> None:
    rng = np.random.default_rng(1)
    rgb16 = rng.integers(0, 65536, size=(12, 20, channels), dtype=np.uint16)
    code = cv2.COLOR_RGBA2BGRA if channels == 4 else cv2.COLOR_RGB2BGR
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb16, code))
    assert ok
    decoded = decode_image(png.tobytes(), max_pixels=MAX)
    assert decoded.bit_depth == 16 and decoded.pixels.dtype == np.uint16
    np.testing.assert_array_equal(decoded.pixels, rgb16)


def test_sixteen_bit_grey_png() -> None:
    grey16 = (np.arange(12 * 20, dtype=np.uint16) * 250).reshape(12, 20)
    ok, png = cv2.imencode(".png", grey16)
    decoded = decode_image(png.tobytes(), max_pixels=MAX)
    assert decoded.bit_depth == 16 and decoded.pixels.shape == (12, 20, 1)
    np.testing.assert_array_equal(decoded.pixels[..., 0], grey16)


def test_cmyk_jpeg_becomes_rgb() -> None:
    cyan = Image.new("CMYK", (16, 16), (255, 0, 0, 0))
    decoded = decode_image(_save(cyan, "JPEG", quality=95), max_pixels=MAX)
    assert decoded.source_mode == "CMYK" and decoded.pixels.shape == (16, 16, 3)
    r, g, b = decoded.pixels[8, 8].astype(int)
    assert r < 40 and g > 200 and b > 200


def test_too_many_pixels_is_refused_from_the_header_before_decoding() -> None:
    # The header announces 10000 x 6000 but no pixel data follows: decoding would fail as corrupt,
    # so only a header-time check can give TooManyPixels here.
    with pytest.raises(TooManyPixels) as info:
        decode_image(_png_header_only(10_000, 6_000), max_pixels=MAX)
    assert info.value.code == "too_many_pixels"
    assert "10000x6000" in info.value.reason
    with pytest.raises(CorruptImage):  # the same bytes under a higher limit: decoding fails
        decode_image(_png_header_only(10_000, 6_000), max_pixels=10**9)


def test_pillows_own_bomb_limit_is_also_reported_as_too_many_pixels() -> None:
    with pytest.raises(TooManyPixels):
        decode_image(_png_header_only(20_000, 20_000), max_pixels=10**12)


def test_limit_applies_to_real_images_too() -> None:
    data = _save(Image.fromarray(_gradient(100, 100)), "JPEG")
    assert decode_image(data, max_pixels=10_000).width == 100
    with pytest.raises(TooManyPixels):
        decode_image(data, max_pixels=9_999)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_files_are_corrupt(fmt: str) -> None:
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _save(Image.fromarray(noisy), fmt)
    with pytest.raises(CorruptImage) as info:
        decode_image(data[: len(data) // 2], max_pixels=MAX)
    assert info.value.code == "corrupt_image"


def test_damaged_png_data_is_corrupt() -> None:
    data = bytearray(_save(Image.fromarray(_gradient()), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 10 : idat + 20] = b"\xff" * 10
    with pytest.raises(CorruptImage):
        decode_image(bytes(data), max_pixels=MAX)


def test_sixteen_bit_truncated_png_is_corrupt() -> None:
    noisy = np.random.default_rng(0).integers(0, 65536, (32, 32, 3), dtype=np.uint16)
    png = cv2.imencode(".png", noisy)[1].tobytes()
    with pytest.raises(CorruptImage):
        decode_image(png[: len(png) // 2], max_pixels=MAX)


def test_header_only_jpeg_is_corrupt() -> None:
    with pytest.raises(CorruptImage):
        decode_image(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", max_pixels=MAX)


@pytest.mark.parametrize("data", [b"", b"just some text that a user named photo.jpg\n"])
def test_empty_and_text_files_are_not_images(data: bytes) -> None:
    with pytest.raises(NotAnImage):
        decode_image(data, max_pixels=MAX)


def test_gif_is_unsupported() -> None:
    with pytest.raises(UnsupportedImage, match="GIF"):
        decode_image(_save(Image.fromarray(_gradient()), "GIF"), max_pixels=MAX)


# -- encoding ---------------------------------------------------------------------------------


def _options(fmt: OutputFormat, quality: int = 92) -> EnhanceOptions:
    return EnhanceOptions(output_format=fmt, output_quality=quality)


@pytest.mark.parametrize(
    ("fmt", "content_type", "extension"),
    [(OutputFormat.JPEG, "image/jpeg", "jpg"), (OutputFormat.PNG, "image/png", "png"),
     (OutputFormat.WEBP, "image/webp", "webp")],
)
def test_encode_names_its_type_and_decodes_back(fmt: OutputFormat, content_type: str, extension: str) -> None:
    encoded = encode_image(_gradient(), _options(fmt))
    assert (encoded.content_type, encoded.extension) == (content_type, extension)
    back = decode_image(encoded.data, max_pixels=MAX)
    assert back.source_format == fmt.value and (back.width, back.height) == (32, 24)


def test_png_round_trip_is_exact_for_8_and_16_bits_and_grey() -> None:
    pixels8 = _gradient()
    np.testing.assert_array_equal(decode_image(encode_image(pixels8, _options(OutputFormat.PNG)).data,
                                               max_pixels=MAX).pixels, pixels8)
    pixels16 = pixels8.astype(np.uint16) * 257 + 3
    back16 = decode_image(encode_image(pixels16, _options(OutputFormat.PNG)).data, max_pixels=MAX)
    np.testing.assert_array_equal(back16.pixels, pixels16)
    grey = pixels8[..., :1]
    np.testing.assert_array_equal(decode_image(encode_image(grey, _options(OutputFormat.PNG)).data,
                                               max_pixels=MAX).pixels, grey)


def test_jpeg_quality_changes_the_size() -> None:
    noisy = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    small = encode_image(noisy, _options(OutputFormat.JPEG, 20)).data
    large = encode_image(noisy, _options(OutputFormat.JPEG, 95)).data
    assert len(small) < len(large)


def test_jpeg_flattens_transparency_onto_white() -> None:
    rgba = np.zeros((16, 16, 4), np.uint8)  # fully transparent black
    back = decode_image(encode_image(rgba, _options(OutputFormat.JPEG, 95)).data, max_pixels=MAX)
    assert back.pixels.shape[2] == 3 and back.pixels.min() > 245


def test_webp_keeps_alpha_and_takes_grey() -> None:
    rgba = np.dstack([_gradient(), np.full((24, 32), 100, np.uint8)])
    back = decode_image(encode_image(rgba, _options(OutputFormat.WEBP, 100)).data, max_pixels=MAX)
    assert back.has_alpha and abs(int(back.pixels[5, 5, 3]) - 100) <= 2
    grey = decode_image(encode_image(_gradient()[..., :1], _options(OutputFormat.WEBP)).data, max_pixels=MAX)
    assert grey.pixels.shape[2] == 3


def test_sixteen_bit_to_jpeg_is_reduced_to_eight() -> None:
    pixels16 = np.full((8, 8, 3), 65535, np.uint16)
    back = decode_image(encode_image(pixels16, _options(OutputFormat.JPEG, 95)).data, max_pixels=MAX)
    assert back.pixels.min() >= 250


def test_output_never_carries_exif() -> None:
    encoded = encode_image(_gradient(), _options(OutputFormat.JPEG))
    assert 0x0112 not in Image.open(io.BytesIO(encoded.data)).getexif()


def test_output_larger_than_webp_allows_is_refused() -> None:
    wide = np.zeros((1, 16_384, 3), np.uint8)
    with pytest.raises(OutputTooLarge):
        encode_image(wide, _options(OutputFormat.WEBP))
    assert encode_image(wide, _options(OutputFormat.PNG)).extension == "png"
