"""A one-shot measurement run in sections: each one timed, its result stored, the JSON written
again after it, and a section that raises recorded with its error while the others still run.

For the GPU scripts (bench/device_check.py, bench/gpu_variants.py): a GPU is lent for minutes, once,
so a broken step must not cost the rest, and what was measured when the time limit cuts a run
off must already be on disk.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["Sections", "or_error"]


def or_error(measure: Callable[[], Any]) -> Any:
    """``measure()``, or, if it raises, its error as a dict (the traceback also printed)."""
    try:
        return measure()
    except Exception as exc:  # noqa: BLE001 - reported in the JSON and on stderr
        return _failure(exc)


def _failure(exc: Exception) -> dict[str, str]:
    traceback.print_exc()
    return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}


class Sections:
    """Runs the sections of ``result``, writing it to ``path`` after each one (``label`` in the log)."""

    def __init__(self, result: dict[str, Any], path: Path, label: str) -> None:
        self.result, self.path, self.label = result, path, label
        self.failed: list[str] = []
        self.started = time.perf_counter()

    def run(self, name: str, measure: Callable[[], Any], *, key: str | None = None) -> None:
        """Measure section ``name`` into ``result[key or name]`` (appended, where that is a list)."""
        began = time.perf_counter()
        try:
            value = measure()
        except Exception as exc:  # noqa: BLE001 - recorded in the JSON; the exit status says so
            value = _failure(exc)
            self.failed.append(name)
        key = key or name
        if isinstance(self.result.get(key), list):
            self.result[key].append(value)
        else:
            self.result[key] = value
        seconds = self.result.setdefault("section_seconds", {})
        seconds[name] = round(time.perf_counter() - began, 1)
        print(f"[{self.label}] {name}: {seconds[name]} s", flush=True)
        self.result["seconds"] = round(time.perf_counter() - self.started, 1)
        self.path.write_text(json.dumps(self.result, indent=2) + "\n")
