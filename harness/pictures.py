"""Test pictures made with real encoders and real colour profiles.

Profiles: Display P3 and Adobe RGB (1998) are built by Little CMS itself (``cmsCreateRGBProfile``
with each space's published primaries, white point and transfer curve, written by
``cmsSaveProfileToMem``) through the system's liblcms2: Pillow's ImageCms can only create sRGB,
LAB and XYZ profiles, and no Debian package ships a Display P3 profile. The CMYK profile is
Ghostscript's SWOP profile (Debian package ``libgs-common``, installed by bootstrap).
Encoders: pillow-heif (libheif + x265) for HEIC, Pillow (libavif) for 8-bit AVIF, imagecodecs
(libavif) for 10/12-bit AVIF.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
from functools import lru_cache
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageCms

__all__ = [
    "CMYK_PROFILE", "adobe_rgb_icc", "avif_bytes", "delta_e", "display_p3_icc", "grey_icc", "heic_bytes", "patches",
    "profiled_patches", "without_profile",
]

#: Ghostscript's CMYK (SWOP) profile, from Debian's libgs-common.
CMYK_PROFILE = Path("/usr/share/color/icc/ghostscript/default_cmyk.icc")


class _xyY(ctypes.Structure):  # noqa: N801 - Little CMS's own name
    _fields_ = [("x", ctypes.c_double), ("y", ctypes.c_double), ("Y", ctypes.c_double)]


class _xyYTriple(ctypes.Structure):  # noqa: N801
    _fields_ = [("Red", _xyY), ("Green", _xyY), ("Blue", _xyY)]


@lru_cache(maxsize=1)
def _lcms() -> ctypes.CDLL:
    name = ctypes.util.find_library("lcms2") or "liblcms2.so.2"
    lib = ctypes.CDLL(name)
    lib.cmsBuildGamma.restype = ctypes.c_void_p
    lib.cmsBuildGamma.argtypes = [ctypes.c_void_p, ctypes.c_double]
    lib.cmsBuildParametricToneCurve.restype = ctypes.c_void_p
    lib.cmsBuildParametricToneCurve.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_double)]
    lib.cmsCreateRGBProfile.restype = ctypes.c_void_p
    lib.cmsCreateRGBProfile.argtypes = [ctypes.POINTER(_xyY), ctypes.POINTER(_xyYTriple), ctypes.c_void_p * 3]
    lib.cmsCreateGrayProfile.restype = ctypes.c_void_p
    lib.cmsCreateGrayProfile.argtypes = [ctypes.POINTER(_xyY), ctypes.c_void_p]
    lib.cmsSaveProfileToMem.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
    lib.cmsCloseProfile.argtypes = [ctypes.c_void_p]
    lib.cmsFreeToneCurve.argtypes = [ctypes.c_void_p]
    lib.cmsMLUalloc.restype = ctypes.c_void_p
    lib.cmsMLUalloc.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.cmsMLUsetASCII.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
    lib.cmsMLUfree.argtypes = [ctypes.c_void_p]
    lib.cmsWriteTag.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p]
    return lib


_D65 = (0.3127, 0.3290, 1.0)
_DESCRIPTION_TAG = 0x64657363  # 'desc'


def _save(lib: ctypes.CDLL, profile: int, description: str) -> bytes:
    mlu = lib.cmsMLUalloc(None, 1)
    lib.cmsMLUsetASCII(mlu, b"en", b"US", description.encode("ascii"))
    lib.cmsWriteTag(profile, _DESCRIPTION_TAG, mlu)
    size = ctypes.c_uint32(0)
    lib.cmsSaveProfileToMem(profile, None, ctypes.byref(size))
    buffer = ctypes.create_string_buffer(size.value)
    lib.cmsSaveProfileToMem(profile, buffer, ctypes.byref(size))
    lib.cmsMLUfree(mlu)
    lib.cmsCloseProfile(profile)
    return buffer.raw[: size.value]


def _rgb_profile(primaries: tuple[tuple[float, float], ...], curve: int, description: str) -> bytes:
    lib = _lcms()
    white = _xyY(*_D65)
    triple = _xyYTriple(*(_xyY(x, y, 1.0) for x, y in primaries))
    curves = (ctypes.c_void_p * 3)(curve, curve, curve)
    profile = lib.cmsCreateRGBProfile(ctypes.byref(white), ctypes.byref(triple), curves)
    lib.cmsFreeToneCurve(curve)
    return _save(lib, profile, description)


def _srgb_curve() -> int:
    """The sRGB transfer function as Little CMS's parametric type 4."""
    params = (ctypes.c_double * 5)(2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)
    return _lcms().cmsBuildParametricToneCurve(None, 4, params)


@lru_cache(maxsize=1)
def display_p3_icc() -> bytes:
    """Display P3: DCI-P3 primaries, D65 white, the sRGB transfer curve."""
    return _rgb_profile(((0.680, 0.320), (0.265, 0.690), (0.150, 0.060)), _srgb_curve(), "Display P3 (test)")


@lru_cache(maxsize=1)
def adobe_rgb_icc() -> bytes:
    """Adobe RGB (1998): its primaries, D65 white, gamma 563/256."""
    return _rgb_profile(((0.640, 0.330), (0.210, 0.710), (0.150, 0.060)),
                        _lcms().cmsBuildGamma(None, 563 / 256), "Adobe RGB (1998) (test)")


@lru_cache(maxsize=1)
def grey_icc() -> bytes:
    """A grey profile with gamma 2.2 and a D65 white."""
    lib = _lcms()
    curve = lib.cmsBuildGamma(None, 2.2)
    profile = lib.cmsCreateGrayProfile(ctypes.byref(_xyY(*_D65)), curve)
    lib.cmsFreeToneCurve(curve)
    return _save(lib, profile, "Grey gamma 2.2 (test)")


def heic_bytes(images: list[np.ndarray] | np.ndarray, *, bits: int = 8, quality: int = 90, **info: object) -> bytes:
    """HEIC from pillow-heif's encoder; several arrays make a multi-image file (first = primary).

    ``bits`` 10 or 12: uint16 arrays with samples in 0..65535, stored at that depth.
    ``info``: ``icc_profile``, ``exif``, ``xmp`` bytes for the primary image.
    """
    arrays = images if isinstance(images, list) else [images]
    heif = pillow_heif.HeifFile()
    for index, array in enumerate(arrays):
        if bits > 8:
            mode = "RGBA;16" if array.shape[2] == 4 else "RGB;16"
            added = heif.add_frombytes(mode, (array.shape[1], array.shape[0]), np.ascontiguousarray(array).tobytes())
        else:
            added = heif.add_from_pillow(Image.fromarray(np.ascontiguousarray(array)))
        if index == 0:
            for key, value in info.items():
                added.info[key] = value
    buffer = io.BytesIO()
    heif.save(buffer, quality=quality, save_all=True, **({"bit_depth": bits} if bits > 8 else {}))
    return buffer.getvalue()


def avif_bytes(array: np.ndarray, *, bits: int = 8, quality: int = 90, **info: object) -> bytes:
    """AVIF from libavif: Pillow's encoder for 8 bits (with ``icc_profile``/``exif``/``xmp``),
    imagecodecs' for 10 or 12 bits (``array`` uint16 in 0..2**bits-1)."""
    if bits > 8:
        import imagecodecs

        return imagecodecs.avif_encode(array, level=quality, bitspersample=bits)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, "AVIF", quality=quality, **info)
    return buffer.getvalue()


# -- colour accuracy (tests and bench/colour.py) ---------------------------------------------------


def patches(colours: list[tuple[int, int, int]] | None = None) -> np.ndarray:
    """Saturated patches (primaries, secondaries at 100 % and 80 %, mixtures, greys), 16x16 each."""
    colours = colours or [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255),
               (204, 0, 0), (0, 204, 0), (0, 0, 204), (204, 204, 0), (0, 204, 204), (204, 0, 204),
               (230, 120, 40), (60, 150, 220), (0, 0, 0), (128, 128, 128), (255, 255, 255), (200, 170, 150)]
    tiles = [np.full((PATCH, PATCH, 3), c, np.uint8) for c in colours]
    return np.concatenate([np.concatenate(tiles[i:i + 6], axis=1) for i in range(0, len(tiles), 6)], axis=0)


def profiled_patches(icc: bytes, colours: list[tuple[int, int, int]] | None = None, *, in_srgb: bool = True) -> bytes:
    """A PNG of :func:`patches` embedding ``icc``: the sRGB colours converted into its space
    (``in_srgb``), or the numbers written as they are (saturated in the wide space, partly outside sRGB)."""
    target = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    if not in_srgb:
        buffer = io.BytesIO()
        Image.fromarray(patches(colours)).save(buffer, "PNG", icc_profile=icc)
        return buffer.getvalue()
    moved = ImageCms.profileToProfile(Image.fromarray(patches(colours)), ImageCms.createProfile("sRGB"), target,
                                      renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
    buffer = io.BytesIO()
    moved.save(buffer, "PNG", icc_profile=icc)
    return buffer.getvalue()


#: Edge of a patch, and the margin left out of the measurement: Lanczos rings for a few pixels
#: at the hard edge between two saturated patches, in the input's space as in sRGB.
PATCH, MARGIN = 16, 4


def patch_interiors(values: np.ndarray) -> np.ndarray:
    """``values`` (h, w) restricted to the interior of each patch."""
    inside = np.zeros(PATCH, bool)
    inside[MARGIN:PATCH - MARGIN] = True
    rows = np.tile(inside, values.shape[0] // PATCH)
    cols = np.tile(inside, values.shape[1] // PATCH)
    return values[np.ix_(rows, cols)]


def delta_e(input_data: bytes, result_data: bytes) -> np.ndarray:
    """ΔE2000 per pixel (patch interiors) between an input and a result brought back to the
    input's size, each read through the profile it embeds (sRGB when none)."""
    from skimage.color import deltaE_ciede2000

    def lab(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
        image = Image.open(io.BytesIO(data)).convert("RGB")
        if size is not None:
            image = image.resize(size, Image.Resampling.LANCZOS)
        icc = image.info.get("icc_profile") or Image.open(io.BytesIO(data)).info.get("icc_profile")
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc)) if icc else ImageCms.createProfile("sRGB")
        transform = ImageCms.buildTransform(source, ImageCms.createProfile("LAB", 6500), "RGB", "LAB",
                                            renderingIntent=ImageCms.Intent.ABSOLUTE_COLORIMETRIC)
        raw = np.asarray(ImageCms.applyTransform(image, transform)).astype(np.float64)
        return np.stack([raw[..., 0] * 100 / 255, raw[..., 1] - 128, raw[..., 2] - 128], axis=2)

    size = Image.open(io.BytesIO(input_data)).size
    return patch_interiors(deltaE_ciede2000(lab(input_data), lab(result_data, size)))


def without_profile(data: bytes) -> bytes:
    """The same pixels with the profile dropped, as the worker before issue 16 treated them."""
    decoded = Image.open(io.BytesIO(data))
    decoded.info.pop("icc_profile")  # Pillow would write it again from here
    buffer = io.BytesIO()
    decoded.save(buffer, "PNG")
    return buffer.getvalue()
