"""CPU time and memory of running processes, read from /proc (Linux; no psutil needed).

A :class:`ProcSample` is taken at the start and the end of a measured phase; the difference of
their CPU times is what the process spent in that phase. The kernel keeps each process's peak
resident size (``VmHWM``) itself, so the peak needs no polling, but it must be read before the
process exits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcSample", "phase_usage", "sample"]

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcSample:
    """One reading of one process."""

    #: User + system CPU seconds since the process started.
    cpu_s: float
    #: Resident set size now, bytes.
    rss_bytes: int
    #: Largest resident set size so far, bytes.
    peak_rss_bytes: int


def sample(pid: int) -> ProcSample | None:
    """Read ``pid``'s CPU time and memory; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses; the fields after its closing ")" do not.
    fields = stat.rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / _TICKS_PER_S
    kib = {}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            kib[name] = int(value.split()[0])
    return ProcSample(cpu_s, kib.get("VmRSS", 0) * 1024, kib.get("VmHWM", 0) * 1024)


def phase_usage(before: ProcSample | None, after: ProcSample | None, wall_s: float) -> dict[str, float] | None:
    """CPU seconds and share of one core spent between two samples, with the memory at the end."""
    if before is None or after is None:
        return None
    cpu = after.cpu_s - before.cpu_s
    return {
        "cpu_s": round(cpu, 2),
        "cpu_share_of_one_core": round(cpu / wall_s, 3) if wall_s > 0 else 0.0,
        "rss_final_mib": round(after.rss_bytes / 2**20, 1),
        "rss_peak_mib": round(after.peak_rss_bytes / 2**20, 1),
    }
