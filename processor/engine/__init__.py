"""The enhancement engine: a plain library (no queue, no storage) shared by the worker, CLI and benchmarks.

``Engine.load(settings, qualities=...)`` loads and verifies what the chosen quality levels need,
``engine.enhance_batch(requests)`` enhances a micro-batch. Errors and image I/O live in the light
modules :mod:`processor.engine.errors` and :mod:`processor.engine.imageio`; importing them (or this
package) does not import torch: the engine's names are resolved on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from processor.engine.version import ENGINE_VERSION

if TYPE_CHECKING:
    from processor.engine.engine import Engine
    from processor.engine.records import EnhanceRequest, EnhanceResult

__all__ = ["ENGINE_VERSION", "Engine", "EnhanceRequest", "EnhanceResult"]

#: Names resolved lazily, by the module that defines them.
_LAZY = {
    "Engine": "processor.engine.engine",
    "EnhanceRequest": "processor.engine.records",
    "EnhanceResult": "processor.engine.records",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
