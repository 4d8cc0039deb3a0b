"""How long a run will take: the level's measured speed (``GET /api/v1/capabilities``, seconds per
input megapixel, the median over the live workers serving it) times the photos' megapixels, read
from their headers (Pillow reads the size without decoding the pixels).

Pure functions, except :func:`megapixels`, which opens the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["describe", "format_duration", "level_entry", "megapixels", "seconds_for"]


def megapixels(path: Path) -> float | None:
    """The photo's size in megapixels from its header; None when Pillow cannot read it."""
    from PIL import Image

    try:
        import pillow_heif  # HEIC/AVIF photos: the pipeline accepts them, so the estimate counts them

        pillow_heif.register_heif_opener()
    except ImportError:
        pass
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - any unreadable header only means no estimate for this file
        return None
    return width * height / 1_000_000


def level_entry(capabilities: dict[str, Any], level: str) -> dict[str, Any] | None:
    """The capabilities document's entry for ``level`` (None when it lists no such level)."""
    return next((entry for entry in capabilities.get("levels", []) if entry.get("level") == level), None)


def seconds_for(seconds_per_megapixel: float | None, sizes_mp: Iterable[float | None]) -> float | None:
    """Expected seconds for photos of ``sizes_mp`` megapixels (None: no speed measured yet).

    Files whose size could not be read count as nothing: the estimate is a floor for them.
    """
    if seconds_per_megapixel is None:
        return None
    return seconds_per_megapixel * sum(mp for mp in sizes_mp if mp)


def format_duration(seconds: float) -> str:
    """``"under a second"``, ``"about 40 s"``, ``"about 3 min"``, ``"about 1 h 40 min"``."""
    if seconds < 1:
        return "under a second"
    if seconds < 90:
        return f"about {seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60:02d} min"


def describe(level: str, entry: dict[str, Any] | None, sizes_mp: list[float | None]) -> str:
    """The sentence the CLI prints before uploading (the level's estimate for these photos)."""
    total_mp = sum(mp for mp in sizes_mp if mp)
    photos = f"{len(sizes_mp)} photo{'s' if len(sizes_mp) != 1 else ''}, {total_mp:.2f} megapixels"
    speed = entry.get("seconds_per_megapixel") if entry else None
    if speed is None:
        why = "no worker serving it has measured its speed yet" if entry and entry.get("workers") else (
            "no worker serving it is running now")
        return f"estimate at {level}: unknown for {photos} ({why})"
    seconds = seconds_for(speed, sizes_mp) or 0.0
    return f"estimate at {level}: {format_duration(seconds)} for {photos} ({speed:.3g} s per megapixel)"
