"""One dedicated inference thread per engine, so callers on an event loop never block on a network.

A single thread (not a pool) because the models are not safe to run concurrently on one device and
because one device gains nothing from two threads feeding it: micro-batching is the lever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["InferenceThread"]

T = TypeVar("T")


class InferenceThread:
    """Runs callables one at a time on a thread of its own, named ``name``."""

    def __init__(self, name: str = "photoenhance-inference") -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the inference thread and wait for it (for callers without an event loop)."""
        return self._executor.submit(fn).result()

    async def call_async(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the inference thread; the awaiting event loop stays free meanwhile."""
        return await asyncio.wrap_future(self._executor.submit(fn))

    def close(self) -> None:
        """Finish queued work and stop the thread."""
        self._executor.shutdown(wait=True, cancel_futures=False)
