"""The event loop the long-lived services run on (EVENT_LOOP): uvloop where it is installed.

uvloop is libuv under asyncio's interface. On the worker's path (a broker consumer, asyncpg, the
object store's threads handing results back, a web server for health) it cut the worker's CPU per
image by 7-13 % against asyncio's own loop (one worker), measured side by side (docs/BENCHMARKS.md, Worker
ceiling, fifth round). ``auto`` takes it when importable and asyncio's loop otherwise; ``asyncio``
keeps the standard one (to rule the loop out when chasing a problem); ``uvloop`` insists on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["EVENT_LOOPS", "run"]

T = TypeVar("T")

#: The values EVENT_LOOP takes.
EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """``asyncio.run(main)`` on the loop ``choice`` names (see :data:`EVENT_LOOPS`)."""
    loop = (choice or "auto").strip().lower()
    if loop not in EVENT_LOOPS:
        main.close()  # never awaited: say so quietly rather than with a RuntimeWarning
        raise ValueError(f"EVENT_LOOP must be one of {', '.join(EVENT_LOOPS)}, got {choice!r}")
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                main.close()
                raise
        else:
            return uvloop.run(main)
    return asyncio.run(main)
