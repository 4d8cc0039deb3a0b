"""HEIC and AVIF inputs, 10/12-bit precision, colour profiles, EXIF/XMP carried, output ``auto``,
and the bad inputs of issue 16: every input made by a real encoder (harness/pictures.py)."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image, ImageCms

from harness.pictures import (
    CMYK_PROFILE,
    adobe_rgb_icc,
    avif_bytes,
    delta_e,
    display_p3_icc,
    grey_icc,
    heic_bytes,
    profiled_patches,
    without_profile,
)
from photoenhance.contracts.formats import resolve_output_format
from photoenhance.contracts.options import EnhanceOptions, OutputFormat, Quality
from photoenhance.formats import sniff_format
from processor.engine.errors import CorruptImage, TooManyPixels
from processor.engine.fast import fast_result
from processor.engine.header import read_header
from processor.engine.imageio import decode_image, encode_image
from processor.engine.records import EnhanceRequest

MAX = 50_000_000


def _gradient(height: int = 48, width: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 4 % 256, y * 5 % 256, (x + 2 * y) % 256], axis=2).astype(np.uint8)


def _ramp16(height: int = 32, width: int = 64) -> np.ndarray:
    """A 16-bit ramp using 2048 distinct levels, more than 8 bits can hold."""
    levels = np.linspace(0, 65535, height * width * 3).reshape(height, width, 3)
    return np.round(levels).astype(np.uint16)


def _jpeg(array: np.ndarray, **params: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=95, **params)
    return buffer.getvalue()


def _fast(data: bytes, **options: object) -> tuple[bytes, dict]:
    decoded = decode_image(data, max_pixels=MAX)
    opts = EnhanceOptions(quality=Quality.FAST, **options)
    result = fast_result(EnhanceRequest(decoded, opts))
    return encode_image(result.pixels, opts, decoded).data, result.report


# -- inputs ---------------------------------------------------------------------------------------


def test_heic_and_avif_from_real_encoders_are_sniffed_and_decoded() -> None:
    picture = _gradient()
    for data, fmt in ((heic_bytes(picture, quality=100), "heic"), (avif_bytes(picture, quality=100), "avif")):
        assert sniff_format(data) == fmt
        header = read_header(data)
        assert (header.format, header.bit_depth) == (fmt, 8)
        assert header.width >= 64 and header.height >= 48
        decoded = decode_image(data, max_pixels=MAX)
        assert decoded.source_format == fmt
        assert decoded.pixels.shape == (48, 64, 3) and decoded.pixels.dtype == np.uint8
        assert np.abs(decoded.pixels.astype(int) - picture).mean() < 6  # lossy, but this picture


@pytest.mark.parametrize("kind", ["heic", "avif"])
@pytest.mark.parametrize("bits", [10, 12])
def test_deep_heic_and_avif_keep_their_precision_into_16_bit_png(kind: str, bits: int) -> None:
    ramp = _ramp16()
    if kind == "heic":
        data = heic_bytes(ramp, bits=bits, quality=-1)
    else:
        data = avif_bytes(np.round(ramp / 65535 * ((1 << bits) - 1)).astype(np.uint16), bits=bits, quality=100)
    assert read_header(data).bit_depth == bits
    decoded = decode_image(data, max_pixels=MAX)
    assert decoded.pixels.dtype == np.uint16 and decoded.bit_depth == 16
    assert int(decoded.pixels.max()) == 65535  # widened to the full range, not left at 1023 or 65472
    assert len(np.unique(decoded.pixels)) > 512  # more levels than any 8-bit file has
    assert np.abs(decoded.pixels.astype(int) - ramp).mean() < 65535 / (1 << bits) * 2
    png = encode_image(decoded.pixels, EnhanceOptions(output_format=OutputFormat.PNG), decoded)
    back = decode_image(png.data, max_pixels=MAX)
    np.testing.assert_array_equal(back.pixels, decoded.pixels)
    jpeg = encode_image(decoded.pixels, EnhanceOptions(output_format=OutputFormat.JPEG, output_quality=100), decoded)
    eight = np.asarray(Image.open(io.BytesIO(jpeg.data)).convert("RGB")).astype(int)
    expected = np.round(decoded.pixels / 257.0)
    assert np.abs(eight - expected).mean() < 1.5  # 65535 -> 255, not 65535 >> 8 or a wrap


# -- bad input ------------------------------------------------------------------------------------


def test_avif_header_claiming_60000_by_60000_is_refused_before_decoding() -> None:
    """A real encoder's AVIF whose ``ispe`` property is rewritten to claim 60000x60000."""
    data = bytearray(avif_bytes(_gradient(), quality=50))
    at = data.index(b"ispe") + 8  # after type, version and flags
    data[at:at + 8] = (60000).to_bytes(4, "big") * 2
    header = read_header(bytes(data))
    assert (header.width, header.height) == (60000, 60000)
    started = time.process_time()
    with pytest.raises(TooManyPixels) as info:
        decode_image(bytes(data), max_pixels=MAX)
    assert "60000x60000" in info.value.reason and info.value.code == "too_many_pixels"
    assert time.process_time() - started < 1.0  # refused from the header, nothing decoded


def test_truncated_heic_is_a_corrupt_image() -> None:
    data = heic_bytes(_gradient(96, 128))
    for cut in (len(data) // 2, len(data) - 40):
        with pytest.raises(CorruptImage) as info:
            decode_image(data[:cut], max_pixels=MAX)
        assert info.value.code == "corrupt_image" and "HEIC" in info.value.reason


def test_heic_with_several_images_gives_its_primary_and_says_so() -> None:
    first, second, third = _gradient(), np.zeros((48, 64, 3), np.uint8), np.full((20, 30, 3), 255, np.uint8)
    data = heic_bytes([first, second, third], quality=100)
    decoded = decode_image(data, max_pixels=MAX)
    assert np.abs(decoded.pixels.astype(int) - first).mean() < 6
    assert decoded.notes["images_in_file"] == 3 and decoded.notes["used"] == "primary image only"
    _, report = _fast(data)
    assert report["source"]["images_in_file"] == 3


def test_corrupt_icc_profile_is_ignored_and_reported() -> None:
    broken = bytearray(display_p3_icc())
    broken[128:] = b"\xff" * (len(broken) - 128)  # a real profile with its tag table destroyed
    for data in (_jpeg(_gradient(), icc_profile=bytes(broken)), heic_bytes(_gradient(), icc_profile=bytes(broken))):
        decoded = decode_image(data, max_pixels=MAX)
        assert decoded.notes["colour_profile"] == "ignored"
        assert "profile" in decoded.notes["reason"]
        result, report = _fast(data)
        assert report["source"]["colour_profile"] == "ignored"
        out = Image.open(io.BytesIO(result))
        assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(out.info["icc_profile"]))).startswith("sRGB")


def test_unparseable_exif_is_dropped_and_the_image_processed() -> None:
    exif = Image.Exif()
    exif[0x010F] = "Camera"
    raw = bytearray(exif.tobytes())
    raw[6 + 4:6 + 8] = (0xFFFFFF).to_bytes(4, "little")  # IFD0 offset far past the block's end
    data = _jpeg(_gradient(), exif=bytes(raw))
    decoded = decode_image(data, max_pixels=MAX)
    assert decoded.notes["exif"].startswith("dropped")
    result, _ = _fast(data)
    assert "exif" not in Image.open(io.BytesIO(result)).info


def test_one_by_one_avif_is_enhanced() -> None:
    data = avif_bytes(np.full((1, 1, 3), 200, np.uint8), quality=100)
    result, report = _fast(data, upscale=2.0)
    assert Image.open(io.BytesIO(result)).size == (2, 2)
    assert report["source"]["format"] == "avif"


# -- colour ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", [display_p3_icc, adobe_rgb_icc], ids=["display-p3", "adobe-rgb"])
def test_profiled_input_comes_back_looking_the_same(profile) -> None:
    """ΔE2000 below 2 (mean and max) through ``fast``, and far below what dropping the profile gives.

    The patches are sRGB's saturated primaries and secondaries (and mixtures) written in the input's
    space, so every one is a colour the sRGB result can hold; colours outside sRGB are clipped by
    the conversion (bench/colour.py measures those too). PNG (lossless) so the figures measure
    colour handling, not JPEG's chroma loss.
    """
    data = profiled_patches(profile())
    result, report = _fast(data, upscale=2.0)
    assert report["source"]["colour_profile"] == "converted"
    handled = delta_e(data, result)
    dropped = delta_e(data, _fast(without_profile(data), upscale=2.0)[0])
    assert handled.mean() < 2 and handled.max() < 2
    assert dropped.mean() > 2 * handled.mean() and dropped.max() > handled.max()


@pytest.mark.parametrize("profile", [display_p3_icc, adobe_rgb_icc], ids=["display-p3", "adobe-rgb"])
def test_colours_outside_srgb_come_back_in_the_inputs_profile(profile) -> None:
    """The wide space's own primaries and mixtures, which sRGB clips: before, through ``fast``,
    ΔE2000 up to 10.98 (P3) and 28.18 (Adobe RGB); now below 2, the result carrying the input's
    profile, while the networks still saw sRGB."""
    data = profiled_patches(profile(), in_srgb=False)
    decoded = decode_image(data, max_pixels=MAX)
    assert decoded.gamut is not None and np.abs(decoded.gamut.codes).max() > 20  # sRGB clipped these
    result, report = _fast(data, upscale=2.0)
    assert report["source"]["colour_profile"] == "converted"
    assert report["source"]["result_profile"].startswith("the input's")
    out = Image.open(io.BytesIO(result))
    assert out.info["icc_profile"] == profile()
    handled = delta_e(data, result)
    assert handled.mean() < 2 and handled.max() < 2
    assert delta_e(data, _fast(without_profile(data), upscale=2.0)[0]).max() > 10


def test_a_wide_gamut_photo_keeps_its_colours_through_a_network_level_too() -> None:
    """The residual is added to whatever the level made of the sRGB pixels: here a stand-in level
    that returns them unchanged but four times larger by nearest neighbour, as a network's output
    would differ from ``fast``'s."""
    data = profiled_patches(display_p3_icc(), in_srgb=False)
    decoded = decode_image(data, max_pixels=MAX)
    upscaled = np.repeat(np.repeat(decoded.pixels, 4, axis=0), 4, axis=1)
    result = encode_image(upscaled, EnhanceOptions(quality=Quality.FAST, upscale=4.0, output_format=OutputFormat.PNG),
                          decoded).data
    assert Image.open(io.BytesIO(result)).info["icc_profile"] == display_p3_icc()
    assert delta_e(data, result).mean() < 2


def test_the_residual_turns_upright_with_the_pixels() -> None:
    """A wide-gamut photo stored sideways (EXIF orientation 6): its clipped colours stay where
    they belong in the upright result."""
    plain = Image.open(io.BytesIO(profiled_patches(display_p3_icc(), in_srgb=False)))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    plain.save(buffer, "PNG", icc_profile=display_p3_icc(), exif=exif.tobytes())
    decoded = decode_image(buffer.getvalue(), max_pixels=MAX)
    assert decoded.orientation == 6 and decoded.gamut is not None
    assert decoded.gamut.codes.shape[:2] == decoded.pixels.shape[:2] == (plain.width, plain.height)
    result = encode_image(decoded.pixels, EnhanceOptions(quality=Quality.FAST, upscale=1.0,
                                                         output_format=OutputFormat.PNG), decoded).data
    upright = np.asarray(Image.open(io.BytesIO(result)).convert("RGB"), dtype=int)
    expected = np.rot90(np.asarray(plain.convert("RGB"), dtype=int), k=-1)  # orientation 6: 90° clockwise
    assert np.abs(upright - expected).max() <= 3


def test_colours_sRGB_holds_leave_no_residual_and_get_srgb() -> None:
    decoded = decode_image(profiled_patches(display_p3_icc(), in_srgb=True), max_pixels=MAX)
    assert decoded.gamut is None and decoded.metadata.icc_profile is not None
    assert ImageCms.getProfileDescription(
        ImageCms.ImageCmsProfile(io.BytesIO(decoded.metadata.icc_profile))
    ).startswith("sRGB")


def test_a_profile_name_is_reported_without_the_control_characters_it_carried() -> None:
    # The description is the uploader's text and goes into reports, logs and webhooks: a
    # terminal escape or a bell in it must not (a NUL already ends it in LittleCMS). "Display"
    # of the test profile's UTF-16 name is overwritten in place: the profile stays valid.
    icc = display_p3_icc()
    name_at = icc.find("Display".encode("utf-16-be"))
    assert name_at > 0
    hostile = icc[:name_at] + "\x1b[31m\x07D".encode("utf-16-be") + icc[name_at + 14:]
    decoded = decode_image(profiled_patches(hostile), max_pixels=MAX)
    assert decoded.notes == {"colour_profile": "converted", "from": "[31mD P3 (test)"}


def test_grey_and_cmyk_inputs_with_profiles_are_converted() -> None:
    grey = Image.fromarray(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (16, 1)), "L")
    buffer = io.BytesIO()
    grey.save(buffer, "PNG", icc_profile=grey_icc())
    decoded = decode_image(buffer.getvalue(), max_pixels=MAX)
    assert decoded.notes["colour_profile"] == "converted" and decoded.pixels.shape[2] == 3
    assert (decoded.pixels[..., 0] == decoded.pixels[..., 1]).all()  # still neutral
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # process red
    buffer = io.BytesIO()
    cmyk.save(buffer, "JPEG", quality=100, icc_profile=CMYK_PROFILE.read_bytes())
    decoded = decode_image(buffer.getvalue(), max_pixels=MAX)
    assert decoded.notes["colour_profile"] == "converted" and decoded.pixels.shape[2] == 3
    red, green, blue = decoded.pixels[8, 8].astype(int)
    naive = np.asarray(cmyk.convert("RGB"))[8, 8].astype(int)
    assert red > 180 and green < 120 and blue < 120
    assert (red, green, blue) != tuple(naive)  # the profile, not Pillow's naive formula, decided


# -- metadata -------------------------------------------------------------------------------------


def _camera_exif(orientation: int = 6) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Canon"
    exif[0x0110] = "EOS R5"
    exif[0x8298] = "(c) Someone"
    exif[0x011A] = 300
    exif[0x011B] = 300
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = "2024:05:01 10:20:30"
    sub[0xA002] = 64
    sub[0xA003] = 48
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 30.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    return exif


XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:exif="http://ns.adobe.com/exif/1.0/" '
       b'xmlns:dc="http://purl.org/dc/elements/1.1/" tiff:Orientation="6" exif:GPSLatitude="48,51.5N" '
       b'dc:format="image/jpeg"/></rdf:RDF></x:xmpmeta>')


@pytest.mark.parametrize("output", [OutputFormat.AUTO, OutputFormat.PNG, OutputFormat.WEBP, OutputFormat.AVIF])
def test_exif_is_carried_upright_resized_and_without_gps(output: OutputFormat) -> None:
    exif = _camera_exif()
    exif[0x0201] = 1234  # thumbnail offset and length, as some writers put them in IFD0
    exif[0x0202] = 56
    data = _jpeg(_gradient(), exif=exif.tobytes(), xmp=XMP)
    result, _ = _fast(data, upscale=2.0, output_format=output)
    out = Image.open(io.BytesIO(result))
    assert out.size == (96, 128)  # upright (orientation 6 turned 64x48 to 48x64), doubled
    got = out.getexif()
    assert got[0x0112] == 1
    assert (got[0x010F], got[0x0110], got[0x8298]) == ("Canon", "EOS R5", "(c) Someone")
    assert float(got[0x011A]) == 600 and float(got[0x011B]) == 600
    sub = got.get_ifd(0x8769)
    assert (sub[0xA002], sub[0xA003]) == (96, 128)
    assert sub[0x9003] == "2024:05:01 10:20:30"
    assert 0x8825 not in got and not got.get_ifd(0x8825)
    assert 0x0201 not in got and 0x0202 not in got
    xmp = out.info.get("xmp") or out.info.get("XML:com.adobe.xmp", "").encode()
    assert b'tiff:Orientation="1"' in xmp and b"GPS" not in xmp and b'dc:format="image/jpeg"' in xmp


def test_keep_gps_keeps_the_position() -> None:
    data = _jpeg(_gradient(), exif=_camera_exif(1).tobytes(), xmp=XMP)
    result, _ = _fast(data, keep_gps=True)
    got = Image.open(io.BytesIO(result)).getexif().get_ifd(0x8825)
    assert got[1] == "N" and [float(v) for v in got[2]] == [48.0, 51.0, 30.0]


def test_heic_exif_and_profile_reach_a_jpeg_result() -> None:
    data = heic_bytes(_gradient(), icc_profile=display_p3_icc(), exif=_camera_exif(1).tobytes())
    result, report = _fast(data)
    out = Image.open(io.BytesIO(result))
    assert out.format == "JPEG" and report["source"]["colour_profile"] == "converted"
    assert out.getexif()[0x010F] == "Canon" and 0x8825 not in out.getexif()


def test_sixteen_bit_png_keeps_sixteen_bits_and_its_metadata() -> None:
    import cv2

    ramp = _ramp16()
    ok, png = cv2.imencode(".png", ramp[..., ::-1])
    decoded = decode_image(png.tobytes(), max_pixels=MAX)
    encoded = encode_image(decoded.pixels, EnhanceOptions(), decoded)
    assert encoded.extension == "png"
    np.testing.assert_array_equal(decode_image(encoded.data, max_pixels=MAX).pixels, ramp)


# -- output format auto ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "requested", "expected"),
    [("jpeg", "auto", "jpeg"), ("png", "auto", "png"), ("webp", "auto", "webp"), ("heic", "auto", "jpeg"),
     ("avif", "auto", "jpeg"), ("heic", "avif", "avif"), ("png", "jpeg", "jpeg"), (None, "auto", "jpeg")],
)
def test_output_format_auto_follows_the_input(source: str | None, requested: str, expected: str) -> None:
    assert resolve_output_format(requested, source) == expected


def test_avif_output_is_written_when_asked() -> None:
    data = heic_bytes(_gradient())
    result, _ = _fast(data, output_format=OutputFormat.AVIF)
    assert sniff_format(result) == "avif"
    assert Image.open(io.BytesIO(result)).size == (128, 96)


def test_animated_avif_gives_its_first_frame_and_says_so() -> None:
    frames = [Image.fromarray(_gradient()), Image.new("RGB", (64, 48), (0, 0, 0)), Image.new("RGB", (64, 48), "white")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "AVIF", save_all=True, append_images=frames[1:], quality=100, duration=100)
    data = buffer.getvalue()
    assert sniff_format(data) == "avif"
    decoded = decode_image(data, max_pixels=MAX)
    assert np.abs(decoded.pixels.astype(int) - _gradient()).mean() < 6
    assert decoded.notes["images_in_file"] == 3 and decoded.notes["used"] == "primary image only"


def test_metadata_too_large_for_a_jpeg_segment_is_left_out_not_the_picture() -> None:
    huge_xmp = XMP.replace(b"dc:format", b"dc:description=\"" + b"x" * 70_000 + b"\" dc:format")
    data = heic_bytes(_gradient(), xmp=huge_xmp)
    result, _ = _fast(data)
    out = Image.open(io.BytesIO(result))
    assert out.format == "JPEG" and sorted(out.size) == [96, 128] and "xmp" not in out.info
