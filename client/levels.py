"""``--quality auto`` and the estimate: ask the ingest API what the fleet serves now, and say so."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

__all__ = ["auto_level", "choose_auto", "fetch_capabilities", "live_levels"]


def fetch_capabilities(server: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """``GET /api/v1/capabilities`` of ``server``. Raises ``OSError`` when the server cannot be asked."""
    with urllib.request.urlopen(f"{server.rstrip('/')}/api/v1/capabilities", timeout=timeout_s) as response:
        return json.loads(response.read())


def choose_auto(caps: dict[str, Any]) -> tuple[str, str]:
    """The level ``auto`` means according to the capabilities document ``caps``, and why."""
    level = caps["default_level"]
    estimate = next((lv.get("seconds_per_megapixel") for lv in caps["levels"] if lv["level"] == level), None)
    why = caps.get("default_reason", "")
    if estimate:
        why += f"; about {estimate:.3g} s per megapixel"
    return level, why


def auto_level(server: str, timeout_s: float = 10.0) -> tuple[str, str]:
    """The level ``auto`` means on ``server`` now, and why. Raises ``OSError`` when it cannot be asked."""
    return choose_auto(fetch_capabilities(server, timeout_s))


def live_levels(caps: dict[str, Any]) -> set[str]:
    """The levels at least one live worker serves now (declared-only levels have none running)."""
    return {lv["level"] for lv in caps.get("levels", []) if lv.get("workers")}
