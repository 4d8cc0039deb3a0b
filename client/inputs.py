"""The photos named on the command line: found, read, fingerprinted and checked before anything is sent.

A folder stands for the files directly inside it (hidden ones left out). Every path that cannot be
used becomes a :class:`Refused` with a reason in plain words (missing, unreadable, not an image),
and the others go on. Formats are recognised from the first bytes with the processor's own
:func:`~photoenhance.formats.sniff_format`, so the CLI refuses exactly what the pipeline would.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from photoenhance.contracts.failures import ImageError
from photoenhance.formats import sniff_format

__all__ = ["LocalFile", "Refused", "gather"]

#: Bytes read to recognise a format (the longest signature, an SVG's XML prologue, fits).
HEAD_BYTES = 1024

#: Read size for fingerprints and uploads.
CHUNK_BYTES = 256 * 1024

#: Content type the API is told, by the format found in the bytes.
CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


@dataclass(frozen=True)
class LocalFile:
    """A readable image on disk."""

    path: Path
    #: The name the batch declares for it (the file's own name).
    name: str
    size: int
    sha256: str
    content_type: str


@dataclass(frozen=True)
class Refused:
    """A path that will not be sent, and why."""

    path: str
    reason: str
    code: str = "refused"


def gather(arguments: list[str]) -> tuple[list[LocalFile], list[Refused]]:
    """Usable images and refused paths, in the order given (folders sorted by name).

    The same file named twice (or found through two arguments) is taken once.
    """
    found: list[LocalFile] = []
    refused: list[Refused] = []
    seen: set[Path] = set()
    for argument in arguments:
        path = Path(argument).expanduser()
        if path.is_dir():
            try:
                children = sorted(p for p in path.iterdir() if not p.name.startswith("."))
            except OSError as exc:
                refused.append(Refused(argument, f"cannot list the folder: {exc.strerror or exc}", "unreadable"))
                continue
            candidates = [c for c in children if not c.is_dir()]
        else:
            candidates = [path]
        for candidate in candidates:
            key = candidate.resolve()
            if key in seen:
                continue
            seen.add(key)
            outcome = _check(candidate)
            (found if isinstance(outcome, LocalFile) else refused).append(outcome)
    return found, refused


def _check(path: Path) -> LocalFile | Refused:
    shown = str(path)
    if not path.exists():
        return Refused(shown, "no such file or folder", "missing")
    if not path.is_file():
        return Refused(shown, "not a regular file", "unreadable")
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEAD_BYTES)
            try:
                fmt = sniff_format(head)
            except ImageError as exc:
                return Refused(shown, exc.reason, exc.code)
            digest = hashlib.sha256(head)
            for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
                digest.update(chunk)
            size = os.fstat(handle.fileno()).st_size
    except OSError as exc:
        return Refused(shown, f"cannot read the file: {exc.strerror or exc}", "unreadable")
    return LocalFile(path=path, name=path.name, size=size, sha256=digest.hexdigest(), content_type=CONTENT_TYPES[fmt])
