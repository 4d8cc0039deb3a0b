"""``--quality auto``: ask the ingest API which level is the best served now, and say so."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

__all__ = ["auto_level"]


def auto_level(server: str, timeout_s: float = 10.0) -> tuple[str, str]:
    """The level ``auto`` means on ``server`` now, and why (from ``GET /api/v1/capabilities``).

    Raises ``OSError`` when the server cannot be asked.
    """
    with urllib.request.urlopen(f"{server.rstrip('/')}/api/v1/capabilities", timeout=timeout_s) as response:
        caps: dict[str, Any] = json.loads(response.read())
    level = caps["default_level"]
    estimate = next((lv.get("seconds_per_megapixel") for lv in caps["levels"] if lv["level"] == level), None)
    why = caps.get("default_reason", "")
    if estimate:
        why += f"; about {estimate:.3g} s per megapixel"
    return level, why
