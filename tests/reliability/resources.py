"""Machine resources as fault-test tools: a process's resident memory, and a tiny tmpfs to fill.

- :func:`rss_bytes` reads ``VmRSS`` from ``/proc/<pid>/status`` (Linux).
- :func:`tmpfs` mounts a size-limited tmpfs (needs root: ``mount -t tmpfs``) and always unmounts it.
- :func:`fill` writes a filler file until the file system refuses one more byte (``ENOSPC``), so the
  next write of anyone on it fails the way a full production disk does.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

__all__ = ["TmpfsUnavailable", "fill", "free_bytes", "rss_bytes", "tmpfs"]

MiB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes (``VmRSS``; 0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


class TmpfsUnavailable(RuntimeError):
    """This machine does not let the tests mount a tmpfs (not root, or no mount permission)."""


@contextlib.contextmanager
def tmpfs(where: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of ``size_bytes`` mounted at ``where`` for the block; unmounted afterwards, always."""
    if os.geteuid() != 0:
        raise TmpfsUnavailable(f"mounting a tmpfs needs root (running as uid {os.geteuid()})")
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs", str(where)],
        check=False, capture_output=True, text=True,
    )
    if mounted.returncode != 0:
        raise TmpfsUnavailable(f"mount -t tmpfs failed: {(mounted.stdout + mounted.stderr).strip()}")
    try:
        yield where
    finally:
        # Lazy unmount: a worker killed a moment ago may still hold files open there.
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still add to the file system holding ``path``."""
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def fill(path: Path) -> int:
    """Write ``path`` until the file system is full (``ENOSPC``); returns the bytes written.

    Big chunks first, then ever smaller ones down to a single byte, so not even a page is left.
    """
    written = 0
    with open(path, "wb", buffering=0) as filler:
        for chunk in (MiB, 64 * 1024, 4096, 512, 1):
            block = b"\0" * chunk
            while True:
                try:
                    written += filler.write(block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return written
