"""Keep large tensor buffers in the C heap, so CPU inference does not fault them in anew each time.

glibc serves allocations above its mmap threshold (at most 32 MiB, adjusted as it goes) with a
fresh ``mmap`` and hands them back with ``munmap`` when freed, and a thread other than the main one
allocates from an arena of its own that cannot hold blocks over 64 MiB at all. A 512 x 512 face
through GFPGAN or ParseNet makes intermediate tensors of 32-128 MiB on every layer, so each forward
on the inference thread page-faulted hundreds of MiB of zeroed pages: ParseNet took 5.9 s per face
on two CPU cores, and 3.7 s once the buffers stay in one heap that is not trimmed. The cost is that
the process keeps its high-water mark of memory, which a long-lived worker reaches in its first
images anyway.

Applied once per process, before the inference thread allocates (its arena is chosen then). A
no-op where the C library has no ``mallopt`` (not glibc) or the platform is not Linux.
"""

from __future__ import annotations

import ctypes
import logging
import sys

__all__ = ["keep_large_buffers", "keeps_large_buffers"]

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

#: Blocks up to this size come from the heap, and this much free memory may stay at its top.
_KEEP_BYTES = 1 << 30

_applied: bool | None = None


def keep_large_buffers() -> bool:
    """Tune glibc's allocator as the module docstring says; returns whether it is in effect."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # One arena: a thread's own arena would still mmap every block over 64 MiB.
    _applied = all(
        mallopt(param, value) == 1
        for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, _KEEP_BYTES), (_M_TRIM_THRESHOLD, _KEEP_BYTES))
    )
    log.debug("glibc allocator keeps large buffers: %s", _applied)
    return _applied


def keeps_large_buffers() -> bool:
    """Whether :func:`keep_large_buffers` is in effect in this process (then freed memory is kept
    on purpose and must not be handed back to the system)."""
    return bool(_applied)
