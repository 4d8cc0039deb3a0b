"""What a person sees while ``photoenhance enhance`` runs: two progress bars and a line per file.

The bars (bytes uploaded, images finished) are drawn on standard error by tqdm, only when it is a
terminal. Lines about files go to standard output, or to standard error with ``--json`` so that
standard output carries nothing but the JSON summary.
"""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

__all__ = ["Reporter"]


class Reporter:
    """Progress bars and per-file lines, kept from trampling each other."""

    def __init__(self, *, json_mode: bool, bars: bool | None = None) -> None:
        self.lines: TextIO = sys.stderr if json_mode else sys.stdout
        # None lets tqdm decide: bars on a terminal, none in a pipe or a log file
        self._disable = None if bars is None else not bars
        self.bytes: tqdm | None = None
        self.images: tqdm | None = None

    def start(self, *, upload_bytes: int, images: int, done: int, label: str = "images") -> None:
        """Open the bars: bytes still to upload, and images (of which ``done`` are finished), the
        latter described by ``label`` (the level and its estimate)."""
        self.bytes = tqdm(
            total=upload_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="upload",
            file=sys.stderr, disable=self._disable, leave=True, position=0, dynamic_ncols=True,
        )
        self.images = tqdm(
            total=images, initial=done, unit="img", desc=label, file=sys.stderr,
            disable=self._disable, leave=True, position=1, dynamic_ncols=True,
        )

    def sent(self, n: int) -> None:
        if self.bytes is not None:
            self.bytes.update(n)

    def finished_one(self) -> None:
        if self.images is not None:
            self.images.update(1)

    def line(self, verb: str, subject: str, detail: str = "") -> None:
        """``  done     beach.jpg -> out/beach.jpg``, above the bars."""
        text = f"  {verb:<8} {subject}{detail}"
        tqdm.write(text, file=self.lines)
        self.lines.flush()

    def note(self, text: str) -> None:
        """A remark about the run (not about one file), always on standard error."""
        tqdm.write(text, file=sys.stderr)

    def close(self) -> None:
        for bar in (self.bytes, self.images):
            if bar is not None:
                bar.close()
