"""Colour profiles: pixels into sRGB before the networks (trained on sRGB), and the profile results carry.

The networks see sRGB: an input with an RGB profile is converted with Little CMS (Pillow's
ImageCms, relative colorimetric). A wide-gamut input (Display P3, Adobe RGB) holds colours sRGB
cannot, and that conversion clips them; a result left in sRGB would lose them for good (ΔE2000 up
to 11 on P3 primaries, 28 on Adobe RGB's green, through ``fast``). So the clipped part is kept
aside: the :class:`GamutResidual` is the input's own codes minus those of its sRGB pixels taken
back into its profile, non-zero only where sRGB clipped. The result is taken back into the input's
profile, the residual (resized to the result) added, and the input's profile embedded: colours
sRGB holds go through the networks as before, and the ones it does not come back instead of
staying clipped. Inputs whose colours all fit in sRGB (every untagged or sRGB-tagged file, most
phone photos) keep no residual and get sRGB with the sRGB profile embedded.

16-bit inputs keep their samples and their own profile (ImageCms transforms 8-bit modes only; an
8-bit round trip would throw the precision away), and the report says so. A profile that cannot be
read, or does not fit the image's colour mode, is ignored: the pixels are taken as sRGB and the
report says the profile was ignored.
"""

from __future__ import annotations

import io
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageCms

__all__ = ["SRGB_ICC", "GamutResidual", "from_srgb_with_gamut", "gamut_residual", "profile_name", "to_srgb"]

#: Little CMS's built-in sRGB profile, embedded in results.
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
SRGB_ICC: bytes = _SRGB.tobytes()

#: The profile colour space (ICC header bytes 16-20) each Pillow mode can be converted from.
_SPACE_OF_MODE = {"RGB": b"RGB ", "RGBA": b"RGB ", "L": b"GRAY", "LA": b"GRAY", "CMYK": b"CMYK"}

#: What each input mode becomes in sRGB (grey and CMYK become RGB: sRGB is an RGB space).
_OUT_MODE = {"RGB": "RGB", "RGBA": "RGBA", "L": "RGB", "LA": "RGBA", "CMYK": "RGB"}


def to_srgb(image: Image.Image, icc: bytes | None) -> tuple[Image.Image, dict[str, str]]:
    """``image`` converted from its embedded profile ``icc`` into sRGB, and a note for the report.

    ``image`` is a loaded 8-bit Pillow image in one of ``RGB``, ``RGBA``, ``L``, ``LA``, ``CMYK``
    (other modes are returned as they are). Without a profile it is returned unchanged (taken as
    sRGB). The note is ``{"colour_profile": "none"}``, ``{"colour_profile": "converted", "from":
    <description>}`` or ``{"colour_profile": "ignored", "reason": ...}``.
    """
    if not icc:
        return image, {"colour_profile": "none"}
    mode = image.mode
    if mode not in _SPACE_OF_MODE:
        return image, {"colour_profile": "ignored", "reason": f"colour mode {mode} cannot be converted"}
    try:
        profile = _profile(icc)
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError) as exc:
        return image, {"colour_profile": "ignored", "reason": f"the embedded ICC profile is unreadable ({exc})"}
    space = icc[16:20]
    if space != _SPACE_OF_MODE[mode]:
        return image, {
            "colour_profile": "ignored",
            "reason": f"the embedded ICC profile is for {space.decode('ascii', 'replace').strip()!r} data, "
                      f"the image is {mode}",
        }
    alpha = image.getchannel("A") if mode in {"RGBA", "LA"} else None
    base = image.convert(mode[:-1]) if alpha is not None else image  # ImageCms leaves alpha alone anyway
    try:
        converted = ImageCms.applyTransform(base, _transform(icc, base.mode))
    except (OSError, ValueError, ImageCms.PyCMSError) as exc:
        return image, {"colour_profile": "ignored", "reason": f"the embedded ICC profile cannot be applied ({exc})"}
    if alpha is not None:
        converted.putalpha(alpha)
    return converted, {"colour_profile": "converted", "from": profile_name(profile)}


#: A round trip through sRGB moves in-gamut codes by a step or two (8-bit rounding twice); a
#: difference this small is rounding, not clipping, and is not kept.
_ROUNDING_CODES = 2

#: Rows of the result converted at a time when adding the residual back.
_BAND_ROWS = 512


@dataclass(frozen=True)
class GamutResidual:
    """What the conversion to sRGB clipped, to add back into the result in the input's profile."""

    #: ``(h, w, 3)`` int16: the input's codes minus its sRGB pixels' codes back in its profile
    #: (zero where they differ by rounding only), upright like the decoded pixels.
    codes: np.ndarray
    #: The input's profile: the result is converted into it and carries it.
    icc: bytes


def gamut_residual(original: Image.Image, srgb: np.ndarray, icc: bytes) -> GamutResidual | None:
    """The residual of an RGB(A) ``original`` in profile ``icc`` whose sRGB pixels are ``srgb``
    (h, w, 3|4); None when every colour survived the conversion (the input fits in sRGB).

    Clipping puts a channel at 0 or 255, so only pixels with a channel there are taken back into
    the input's profile and compared: a phone photo tagged P3 whose colours fit in sRGB costs a
    mask, not a second conversion of the whole picture (that cost 0.7 s of CPU per 12 megapixels).
    """
    if original.mode not in {"RGB", "RGBA"}:
        return None
    rgb = np.ascontiguousarray(srgb[:, :, :3])
    inside = cv2.inRange(rgb, (1, 1, 1), (254, 254, 254))  # one pass in C: numpy's took 190 ms per 12 MP
    if cv2.countNonZero(inside) == inside.size:
        return None
    ys, xs = np.nonzero(inside == 0)
    picked = Image.fromarray(np.ascontiguousarray(rgb[ys, xs][None]), "RGB")
    back = np.asarray(ImageCms.applyTransform(picked, _back_transform(icc)), dtype=np.int16)[0]
    source = np.asarray(original if original.mode == "RGB" else original.convert("RGB"))
    codes = source[ys, xs].astype(np.int16) - back
    clipped = np.abs(codes).max(axis=1) > _ROUNDING_CODES
    if not clipped.any():
        return None
    residual = np.zeros(rgb.shape, np.int16)
    residual[ys[clipped], xs[clipped]] = codes[clipped]
    return GamutResidual(residual, icc)


def from_srgb_with_gamut(pixels: np.ndarray, residual: GamutResidual) -> np.ndarray:
    """8-bit sRGB result ``pixels`` (h, w, 3|4) taken back into the input's profile, with the
    clipped colours added back (the residual resized to the result, as ``fast`` resizes)."""
    height, width = pixels.shape[:2]
    codes = residual.codes
    scale_x, scale_y = width / codes.shape[1], height / codes.shape[0]
    out = np.empty_like(pixels)
    transform = _back_transform(residual.icc)
    for top in range(0, height, _BAND_ROWS):  # in bands: no result-sized int16 array at any time
        bottom = min(top + _BAND_ROWS, height)
        rgb = Image.fromarray(np.ascontiguousarray(pixels[top:bottom, :, :3]), "RGB")
        back = np.asarray(ImageCms.applyTransform(rgb, transform), dtype=np.int16)
        out[top:bottom, :, :3] = np.clip(back + _resized_rows(codes, scale_x, scale_y, top, bottom, width), 0, 255)
    if pixels.shape[2] == 4:
        out[:, :, 3] = pixels[:, :, 3]
    return out


def _resized_rows(codes: np.ndarray, scale_x: float, scale_y: float, top: int, bottom: int, width: int) -> np.ndarray:
    """Rows ``top:bottom`` of ``codes`` resized by (``scale_x``, ``scale_y``) with Lanczos, pixel
    centres aligned as ``cv2.resize`` aligns them, without resizing the rest."""
    if scale_x == 1 and scale_y == 1:
        return codes[top:bottom]
    to_source = np.array([[1 / scale_x, 0, 0.5 / scale_x - 0.5],
                          [0, 1 / scale_y, (top + 0.5) / scale_y - 0.5]], dtype=np.float64)
    return cv2.warpAffine(codes, to_source, (width, bottom - top), flags=cv2.INTER_LANCZOS4 | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def profile_name(profile: ImageCms.ImageCmsProfile) -> str:
    """The profile's own description (``"Display P3"``), or ``"unnamed"``.

    The description is the uploader's text: control characters (a terminal escape, a NUL) and
    lone surrogates are dropped, since it goes into reports, logs, events and webhooks."""
    try:
        described = ImageCms.getProfileDescription(profile) or ""
    except ImageCms.PyCMSError:
        return "unnamed"
    shown = "".join(ch for ch in described if unicodedata.category(ch) not in {"Cc", "Cs"})
    return " ".join(shown.split())[:100] or "unnamed"


@lru_cache(maxsize=32)
def _profile(icc: bytes) -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(io.BytesIO(icc))


@lru_cache(maxsize=32)
def _back_transform(icc: bytes) -> ImageCms.ImageCmsTransform:
    """sRGB into the profile ``icc`` (RGB to RGB), for the residual and the result."""
    return ImageCms.buildTransform(_SRGB, _profile(icc), "RGB", "RGB",
                                   renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)


@lru_cache(maxsize=32)
def _transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform:
    """One transform per (profile, mode); building one costs far more than applying it."""
    return ImageCms.buildTransform(
        _profile(icc), _SRGB, mode, _OUT_MODE[mode], renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC
    )
