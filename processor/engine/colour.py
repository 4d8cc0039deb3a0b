"""Colour profiles: pixels into sRGB before the networks (trained on sRGB), and the profile results carry.

Choice: results are sRGB with the sRGB profile embedded, not converted back into the input's
profile. Every level works in sRGB, every viewer and browser colour-manages an sRGB-tagged file,
and converting back could not bring back colours the sRGB step already clipped; one output space
also keeps results comparable. Conversion uses Little CMS through Pillow's ImageCms, relative
colorimetric intent (exact for the colours sRGB holds). 16-bit inputs keep their samples and their
own profile (ImageCms transforms 8-bit modes only; an 8-bit round trip would throw the precision
away), and the report says so. A profile that cannot be read, or does not fit the image's colour
mode, is ignored: the pixels are taken as sRGB and the report says the profile was ignored.
"""

from __future__ import annotations

import io
from functools import lru_cache

from PIL import Image, ImageCms

__all__ = ["SRGB_ICC", "profile_name", "to_srgb"]

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


def profile_name(profile: ImageCms.ImageCmsProfile) -> str:
    """The profile's own description (``"Display P3"``), or ``"unnamed"``."""
    try:
        return (ImageCms.getProfileDescription(profile) or "unnamed").strip()[:100]
    except ImageCms.PyCMSError:
        return "unnamed"


@lru_cache(maxsize=32)
def _profile(icc: bytes) -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(io.BytesIO(icc))


@lru_cache(maxsize=32)
def _transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform:
    """One transform per (profile, mode); building one costs far more than applying it."""
    return ImageCms.buildTransform(
        _profile(icc), _SRGB, mode, _OUT_MODE[mode], renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC
    )
