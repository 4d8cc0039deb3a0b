"""Facts about the machine and the code a benchmark ran on, for its JSON (Linux)."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["load_average", "machine_facts"]

ROOT = Path(__file__).resolve().parents[1]

#: Packages whose versions shape the figures.
PACKAGES = ("torch", "numpy", "pillow", "aio-pika", "aiohttp", "sqlalchemy", "aiosqlite", "minio")


def _field(path: str, key: str, sep: str) -> str:
    """The value of the first ``key<sep>value`` line of a file ("" when absent)."""
    try:
        for line in Path(path).read_text().splitlines():
            name, found, value = line.partition(sep)
            if found and name.strip() == key:
                return value.strip().strip('"')
    except OSError:
        pass
    return ""


def _command(*argv: str) -> str:
    """First line of a command's output, or "" when it cannot run."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout or done.stderr).strip().split("\n")[0] if done.returncode == 0 else ""


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (other work on the machine shows here)."""
    return [round(x, 2) for x in os.getloadavg()]


def machine_facts() -> dict[str, Any]:
    """CPU, cores, memory, OS, Python and package versions, store version, git commit, date."""
    mem_kib = _field("/proc/meminfo", "MemTotal", ":").split()
    commit = _command("git", "rev-parse", "HEAD")
    dirty = bool(_command("git", "status", "--porcelain", "--untracked-files=no"))
    return {
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "cpu_model": _field("/proc/cpuinfo", "model name", ":") or platform.processor(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(int(mem_kib[0]) / 2**20, 1) if mem_kib else None,
        "os": _field("/etc/os-release", "PRETTY_NAME", "=") or platform.platform(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "radosgw": _command("radosgw", "--version"),
        "git_commit": commit,
        "git_worktree_modified": dirty,
        "load_average_at_start": load_average(),
    }
