"""The allocator tuning the engine applies before its inference thread starts (glibc only)."""

from __future__ import annotations

import subprocess
import sys

import pytest

#: Run in a fresh interpreter (the tuning is process-wide and must precede the thread's first
#: allocation): allocate, fill and free a 200 MiB block twice on a second thread, and print the
#: page faults of the second round. Reused heap pages fault no more; a fresh mmap faults ~51,200.
PROBE = """
import ctypes, resource, sys, threading
if sys.argv[1] == "tuned":
    from processor.engine.allocator import keep_large_buffers
    assert keep_large_buffers() is True and keep_large_buffers() is True
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 200 << 20
faults = []
def rounds():
    for _ in range(2):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(SIZE)
        ctypes.memset(block, 1, SIZE)
        libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
thread = threading.Thread(target=rounds)
thread.start()
thread.join()
print(faults[1])
"""


def _second_round_faults(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_blocks_stay_in_the_heap_on_other_threads() -> None:
    untuned, tuned = _second_round_faults("plain"), _second_round_faults("tuned")
    assert untuned > 40_000, "without the tuning a 200 MiB block is mapped afresh (the probe measures that)"
    assert tuned < 2_000, f"the tuned heap faulted {tuned} pages for a block it had already held"
